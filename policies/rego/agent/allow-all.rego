# allow-all: every agent request is allowed, including SetPolicy.
#
# For development with `--tee none`. A guest with a TEE refuses this policy
# unless its measured initdata names it explicitly
# (`agent_policy = "allow-all"` in its cloister.toml entry), so a host cannot fall back to
# it by withholding a policy.
package agent_policy

import rego.v1

default CreateSandboxRequest := true
default DestroySandboxRequest := true
default CreateContainerRequest := true
default StartContainerRequest := true
default ExecProcessRequest := true
default WaitProcessRequest := true
default SignalProcessRequest := true
default RemoveContainerRequest := true
default WriteStreamRequest := true
default CloseStdinRequest := true
default ReadStreamRequest := true
default GuestDetailsRequest := true
default GetEvidenceRequest := true
default ExtendRuntimeMeasurementRequest := true
default SetPolicyRequest := true
default PullImageRequest := true
