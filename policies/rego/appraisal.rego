# Cloister attestation appraisal policy.
#
# Input (built by cloister-attestation after the cryptographic checks):
#   checks:          [{claim, category, ok, expected, found}]
#                    categories: signature, trust-anchor, binding, freshness,
#                    executables, configuration, hardware, init-data,
#                    unsafe-state, tcb-revoked, tcb-outdated, launch-identity
#   simulated:       true when the evidence came from a simulated trust anchor
#   allow_simulated: true when the caller accepts simulated evidence
#
# Simulated evidence (the sim backend) is refused (hardware and
# runtime-opaque 96) unless the caller allows it. Allowed, it is rated on its
# checks but never as hardware: hardware 32 (unsafe hardware) and
# runtime-opaque 32 (memory isolated, not encrypted), so its status is at
# best "warning" and no policy that requires "affirming" (Trustee's samples
# included) can mistake it for a hardware TEE. The EAR also marks it
# `ear.cloister.simulated`.
#
# Unsafe states (SNP debug or VMPL > 0, TDX debug, CCA lifecycle not
# secured) are contraindicated: configuration and runtime-opaque 96. A
# revoked or below-minimum TCB is hardware 96; an out-of-date TCB is
# hardware 32 (warning). Reference values that do not identify the launch
# leave executables unrecognized (33).
#
# Output `result`: {status, trust_vector} with AR4SI values. Status is the
# worst tier over the claims that were set (0 = no claim is ignored).
package cloister.appraisal

import rego.v1

failed(category) if {
	some c in input.checks
	c.category == category
	not c.ok
}

checked(category) if {
	some c in input.checks
	c.category == category
}

# --- instance-identity ---------------------------------------------------
instance_identity := 99 if {
	failed("signature")
} else := 99 if {
	failed("binding")
} else := 97 if {
	failed("trust-anchor")
} else := 96 if {
	failed("freshness")
} else := 2 if {
	checked("signature")
} else := 0

# --- hardware ------------------------------------------------------------
hardware := 99 if {
	failed("signature")
} else := 96 if {
	failed("tcb-revoked")
} else := 97 if {
	failed("hardware")
} else := 97 if {
	failed("trust-anchor")
} else := 96 if {
	input.simulated
	not input.allow_simulated
} else := 32 if {
	input.simulated
} else := 32 if {
	failed("tcb-outdated")
} else := 2 if {
	checked("signature")
} else := 0

# --- executables ---------------------------------------------------------
executables := 99 if {
	failed("signature")
} else := 33 if {
	failed("executables")
} else := 33 if {
	failed("launch-identity")
} else := 2 if {
	checked("executables")
} else := 33

# --- configuration -------------------------------------------------------
configuration := 99 if {
	failed("signature")
} else := 96 if {
	failed("unsafe-state")
} else := 96 if {
	failed("init-data")
} else := 32 if {
	failed("configuration")
} else := 2 if {
	checked("configuration")
} else := 2 if {
	checked("init-data")
} else := 0

# --- runtime-opaque: realm/TD/SNP memory is encrypted on real hardware ----
runtime_opaque := 96 if {
	input.simulated
	not input.allow_simulated
} else := 99 if {
	failed("signature")
} else := 96 if {
	failed("unsafe-state")
} else := 32 if {
	input.simulated
} else := 2

trust_vector := {
	"instance-identity": instance_identity,
	"configuration": configuration,
	"executables": executables,
	"file-system": 0,
	"hardware": hardware,
	"runtime-opaque": runtime_opaque,
	"storage-opaque": 0,
	"sourced-data": 0,
}

tier(v) := "contraindicated" if {
	v >= 96
} else := "contraindicated" if {
	v < 0
} else := "warning" if {
	v >= 32
} else := "affirming" if {
	v >= 2
} else := "none"

tiers contains tier(v) if {
	some v in trust_vector
}

status := "contraindicated" if {
	"contraindicated" in tiers
} else := "warning" if {
	"warning" in tiers
} else := "affirming" if {
	"affirming" in tiers
} else := "none"

result := {
	"status": status,
	"trust_vector": trust_vector,
}
