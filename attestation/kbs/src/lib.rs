//! Trustee-compatible key broker service (KBS protocol 0.4.0).
