# Cloister KBS default resource policy.
#
# Query: data.policy.allow
# input: the claims of the EAR attestation token (submods.cpu0 = the guest).
# data:  {"resource-path": "REPO/TYPE/TAG", "allow-sim": <KBS config allow_sim>}
#
# Releases only to affirming evidence from a hardware root of trust. Evidence
# from the sim backend (a simulated trust anchor) is released only when the
# KBS configuration sets allow_sim, and then only if the appraisal recorded no
# failure. Trustee "sample" evidence (insecure dev mode) is never released.
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

insecure if evidence.runtime_data_claims["insecure-sample"] == true

simulated if cpu0["ear.cloister.simulated"] == true

allow if {
	status == "affirming"
	not simulated
	not insecure
}

allow if {
	data["allow-sim"] == true
	simulated
	not insecure
	status in {"affirming", "warning"}
	count(evidence.failures) == 0
}
