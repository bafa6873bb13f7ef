# Sample resource policy: one reference-value set per workload. A resource
# in repository R is released only to affirming hardware evidence that
# matched the reference-value set named R (the verifier lists the matching
# sets in the EAR's annotated evidence as `reference_value_sets`). Reference
# values: {"sets": {"web": {...}, "db": {...}}}. Load with
#   cloister kbs admin --kbs URL --key KEY set-policy resource policies/kbs/workload-set-resource-policy.rego
package policy

import rego.v1

default allow := false

cpu0 := input.submods.cpu0

status := s if {
	s := cpu0.ear_status
} else := s if {
	s := cpu0["ear.status"]
}

evidence := cpu0["ear.veraison.annotated-evidence"]

parts := split(data["resource-path"], "/")

allow if {
	status == "affirming"
	not cpu0["ear.cloister.simulated"]
	parts[0] in evidence.reference_value_sets
}
