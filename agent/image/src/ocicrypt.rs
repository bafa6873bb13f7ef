//! ocicrypt layer decryption and encryption.
