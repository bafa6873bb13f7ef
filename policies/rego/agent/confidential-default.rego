# confidential-default: what a confidential guest allows an untrusted host.
#
# - no ExecProcess into containers;
# - no host-chosen rootfs: only a rootfs the guest pulled itself (kind IMAGE);
# - no OCI hooks from the host (they would run as root in the guest);
# - no bind mounts of host or guest paths beyond a short allow-list, and only
#   kernel file systems otherwise;
# - the required namespaces (pid, ipc, uts, mount), none joined by path;
# - capabilities within the container runtimes' default set;
# - images only by a digest that initdata pins (cloister.toml pinned_images;
#   the agent passes their digests as data.initdata["image-digests"], one
#   `sha256:...` per line), even when initdata names an image signature
#   policy: a launch that trusts signatures alone embeds its own agent
#   policy (cloister initdata new --policy);
# - GetEvidence refused (the host gets no fresh evidence from the guest),
#   unless initdata sets cloister.toml allow_host_evidence (the agent passes
#   it as data.initdata["allow-host-evidence"]);
# - SetPolicy refused (the measured policy stays).
#
# Denials name the rule that failed through `violations`.
package agent_policy

import rego.v1

default CreateSandboxRequest := true
default DestroySandboxRequest := true
default StartContainerRequest := true
default WaitProcessRequest := true
default SignalProcessRequest := true
default RemoveContainerRequest := true
default WriteStreamRequest := true
default CloseStdinRequest := true
default ReadStreamRequest := true
default GuestDetailsRequest := true
default ExtendRuntimeMeasurementRequest := true

default CreateContainerRequest := false
default ExecProcessRequest := false
default GetEvidenceRequest := false
default SetPolicyRequest := false
default PullImageRequest := false

CreateContainerRequest if count(create_violations) == 0

PullImageRequest if pinned_reference(input.image)

GetEvidenceRequest if object.get(data.initdata, "allow-host-evidence", false) == true

# The rootfs kind of an image the agent pulled itself.
image_rootfs_kind := "IMAGE"

# Kernel file systems a container may mount (source is not a path).
kernel_fs_types := {"proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2"}

# Bind mounts allowed: destination -> required source prefix (files the
# agent itself writes for the sandbox).
allowed_binds := {
	"/etc/resolv.conf": "/run/cloister/sandbox/",
	"/etc/hosts": "/run/cloister/sandbox/",
	"/etc/hostname": "/run/cloister/sandbox/",
}

required_namespaces := {"pid", "ipc", "uts", "mount"}

# The default capability set of containerd/CRI-O/Docker.
default_capabilities := {
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

default image_digests_text := ""

image_digests_text := data.initdata["image-digests"]

pinned_digests := {d |
	some line in split(image_digests_text, "\n")
	d := trim_space(line)
	d != ""
}

pinned_reference(ref) if {
	parts := split(ref, "@")
	count(parts) == 2
	pinned_digests[parts[1]]
}

is_bind(m) if m.type_ == "bind"

is_bind(m) if {
	some o in as_arr(object.get(m, "options", []))
	o in {"bind", "rbind"}
}

create_violations contains msg if {
	input.rootfs.kind != image_rootfs_kind
	msg := sprintf("no_host_rootfs: rootfs kind %v is chosen by the host; only %v (pulled in the guest) is allowed", [input.rootfs.kind, image_rootfs_kind])
}

create_violations contains msg if {
	input.rootfs.kind == image_rootfs_kind
	not pinned_reference(input.rootfs.source)
	msg := sprintf("pinned_image_digest: image %v is not referenced by a digest initdata pins (pin it: cloister initdata new --pin REF@sha256:DIGEST; to admit signature-verified images without pins, embed an agent policy that allows them: --policy)", [input.rootfs.source])
}

create_violations contains msg if {
	some name, hooks in as_obj(object.get(input.OCI, "Hooks", {}))
	count(as_arr(hooks)) > 0
	msg := sprintf("no_host_hooks: %v hooks are not allowed", [name])
}

create_violations contains msg if {
	some m in as_arr(object.get(input.OCI, "Mounts", []))
	is_bind(m)
	not bind_allowed(m)
	msg := sprintf("bind_mount_allow_list: bind mount of %v at %v is not in the allow-list", [m.source, m.destination])
}

create_violations contains msg if {
	some m in as_arr(object.get(input.OCI, "Mounts", []))
	not is_bind(m)
	not m.type_ in kernel_fs_types
	msg := sprintf("bind_mount_allow_list: mount of %v (type %v) at %v is not a kernel file system", [m.source, m.type_, m.destination])
}

bind_allowed(m) if startswith(m.source, allowed_binds[m.destination])

namespaces := {ns.Type | some ns in as_arr(object.get(as_obj(object.get(input.OCI, "Linux", {})), "Namespaces", []))}

create_violations contains msg if {
	some ns in required_namespaces
	not ns in namespaces
	msg := sprintf("required_namespaces: the %v namespace is missing", [ns])
}

create_violations contains msg if {
	some ns in as_arr(object.get(as_obj(object.get(input.OCI, "Linux", {})), "Namespaces", []))
	not object.get(ns, "Path", "") in {"", null}
	msg := sprintf("required_namespaces: joining the %v namespace at %v is not allowed", [ns.Type, ns.Path])
}

create_violations contains msg if {
	caps := as_obj(object.get(as_obj(object.get(input.OCI, "Process", {})), "Capabilities", {}))
	some set_name, list in caps
	some cap in as_arr(list)
	not cap in default_capabilities
	msg := sprintf("default_capabilities: %v in %v is beyond the default set", [cap, set_name])
}

violations := {
	"CreateContainerRequest": create_violations,
	"ExecProcessRequest": {"no_exec: ExecProcess is refused in a confidential guest"},
	"GetEvidenceRequest": {"no_host_evidence: GetEvidence is refused in a confidential guest unless initdata sets cloister.toml allow_host_evidence"},
	"SetPolicyRequest": {"no_set_policy: the measured policy cannot be replaced"},
	"PullImageRequest": {sprintf("pinned_image_digest: image %v is not referenced by a digest initdata pins (pin it: cloister initdata new --pin REF@sha256:DIGEST; to admit signature-verified images without pins, embed an agent policy that allows them: --policy)", [object.get(input, "image", "")])},
}

# Kata serialises absent OCI fields as null: treat null like empty.
as_obj(x) := x if is_object(x)

as_obj(x) := {} if not is_object(x)

as_arr(x) := x if is_array(x)

as_arr(x) := [] if not is_array(x)
