//! The ttrpc API between the Cloister host runtime and its guest agent: the
//! protobuf messages and async ttrpc client/server stubs (generated from
//! `proto/*.proto` into OUT_DIR at build time), the API version and its
//! compatibility rule, and the conventions both ends must agree on (kernel
//! command line keys, the virtio-serial port name, the 9p rootfs tag).
//!
//! It is not the agent and not the host client: it holds no I/O of its own
//! beyond what ttrpc generates.

pub mod auth;
pub mod channel;
pub mod version;

pub use channel::{Channel, ChannelError};
pub use version::{check_compatible, ApiVersion, VersionError, API_VERSION};

/// Protobuf messages of `proto/health.proto`.
#[allow(warnings, missing_debug_implementations, clippy::all, clippy::pedantic)]
#[allow(unsafe_code)] // generated code; audited by protobuf-codegen, not us
pub mod health {
    include!(concat!(env!("OUT_DIR"), "/health.rs"));
}

/// Async ttrpc client and server stubs of the `Health` service.
#[allow(warnings, missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod health_ttrpc {
    include!(concat!(env!("OUT_DIR"), "/health_ttrpc.rs"));
}

/// Protobuf messages of `proto/agent.proto`.
#[allow(warnings, missing_debug_implementations, clippy::all, clippy::pedantic)]
#[allow(unsafe_code)] // generated code; audited by protobuf-codegen, not us
pub mod agent {
    include!(concat!(env!("OUT_DIR"), "/agent.rs"));
}

/// Async ttrpc client and server stubs of the `AgentService` service.
#[allow(warnings, missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod agent_ttrpc {
    include!(concat!(env!("OUT_DIR"), "/agent_ttrpc.rs"));
}

/// Re-exported so users of the generated code need not depend on these
/// crates directly with matching versions.
pub use protobuf;
pub use ttrpc;

/// Exit status for "command not found", as a POSIX shell reports it.
pub const EXIT_NOT_FOUND: i32 = 127;
/// Exit status for "found but not executable", as a POSIX shell reports it.
pub const EXIT_NOT_EXECUTABLE: i32 = 126;

/// Length of the report_data of GetEvidence.
pub const REPORT_DATA_LEN: usize = 64;
