//! KBS client: the RCAR flow (request, challenge, attestation, response) of
//! Trustee's KBS protocol 0.4.0, as the Cloister agent and `cloister attest`
//! run it. It makes an ephemeral P-256 key, binds it and the server's nonce
//! into the evidence (report_data = SHA-384 of the RFC 8785 JSON of
//! `{"additional-evidence","nonce","tee-pubkey"}`, zero-padded to 64 bytes),
//! keeps the attestation token, fetches resources and opens the JWE they come
//! in, re-attesting once when the server answers 401.
//!
//! It is not a verifier and not a server: it carries no policy engine and no
//! evidence parser, so the static guest agent can link it cheaply. Evidence
//! comes from a caller-provided [`Attester`].

pub mod binding;
pub mod client;
pub mod jwe;

pub use binding::{canonical_json, report_data, runtime_data_digest, BindingError};
pub use client::{Attester, AttesterError, BadResourcePath, ClientError, KbsClient, ResourcePath};
pub use jwe::{JweError, TeeKey};
pub use kbs_types;
