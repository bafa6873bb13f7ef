//! End-to-end tests that boot real guests and run real peers.
