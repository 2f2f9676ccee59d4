//! TLS for the hub: server configuration, device client-certificate identity,
//! and certificate generation for tests and the quickstart.

pub mod certs;
pub mod identity;
pub mod server;

pub use identity::{IdentityError, PeerCertificate};
pub use server::TlsError;
