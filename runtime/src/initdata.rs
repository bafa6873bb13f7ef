//! Initdata as the runtime receives it: a file (`--initdata`) or Kata's pod
//! annotation `io.katacontainers.config.hypervisor.cc_init_data` (base64 of
//! gzip of the TOML text), which the shim passes through. Both end as one
//! [`Initdata`], whose exact bytes go to the guest and whose digest goes
//! into the TEE launch field.

use std::collections::HashMap;

pub use cloister_tee::initdata::{Initdata, InitdataError, CC_INIT_DATA_ANNOTATION};

/// The initdata a pod's annotations carry, if any.
pub fn from_annotations(
    annotations: &HashMap<String, String>,
) -> Result<Option<Initdata>, InitdataError> {
    annotations
        .get(CC_INIT_DATA_ANNOTATION)
        .map(|v| Initdata::from_annotation(v))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_is_decoded_and_a_bad_one_named() {
        let doc = Initdata::parse(&b"version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"policy.rego\" = \"package agent_policy\"\n"[..]).unwrap();
        let mut a = HashMap::new();
        assert_eq!(from_annotations(&a).unwrap(), None);
        a.insert(CC_INIT_DATA_ANNOTATION.to_owned(), doc.to_annotation());
        assert_eq!(from_annotations(&a).unwrap(), Some(doc));
        a.insert(CC_INIT_DATA_ANNOTATION.to_owned(), "%%%".to_owned());
        assert!(matches!(
            from_annotations(&a),
            Err(InitdataError::Base64(_))
        ));
    }
}
