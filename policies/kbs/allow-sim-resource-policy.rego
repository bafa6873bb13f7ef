# Sample resource policy for development: releases to sim evidence whatever
# the KBS configuration says, and only to sim evidence (hardware evidence
# needs a policy that checks its reference values, e.g. resource-policy.rego);
# never to insecure "sample" evidence or to evidence with appraisal
# failures. (The KBS still appraises sim evidence only when started with
# --allow-simulated.) Load with
#   cloister kbs admin --kbs URL --key KEY set-policy resource policies/kbs/allow-sim-resource-policy.rego
package policy

import rego.v1

default allow := false

cpu0 := input.submods.cpu0

# The EAR status: `ear_status` (EAR draft as the `ear` crate 0.6 writes it)
# or `ear.status` (older Trustee tokens).
status := s if {
	s := cpu0.ear_status
} else := s if {
	s := cpu0["ear.status"]
}

evidence := cpu0["ear.veraison.annotated-evidence"]

allow if {
	cpu0["ear.cloister.simulated"] == true
	status in {"affirming", "warning"}
	not evidence.runtime_data_claims["insecure-sample"]
	count(evidence.failures) == 0
}
