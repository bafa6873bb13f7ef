//! Rego policy engine (regorus) and Cloister's shipped policies.
