# Sample resource policy: affirming hardware evidence may read only the
# "default" repository, and only resources whose tag is not "admin".
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

parts := split(data["resource-path"], "/")

allow if {
	status == "affirming"
	not cpu0["ear.cloister.simulated"]
	parts[0] == "default"
	parts[2] != "admin"
}
