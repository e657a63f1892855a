//! Speed tests against a pinned server (issue 9, part 1).
//!
//! A client opens a TLS 1.3 session to a server it pins by Ed25519 key ([`tls`]), proves its
//! own node key inside the session, and runs one test: a few pings, an upload, a download
//! ([`proto`]). The server signs a [`receipt::Receipt`] of what it measured, bound to the
//! client's fresh nonce, node id and path label; [`client::run_test`] returns it only once
//! verified. A forwarder on the path can carry the bytes, delay or drop them, but cannot read,
//! alter, forge or replay anything: a slow forwarder gives a slow receipt, never a fast one.
//!
//! The server ([`server::Server`]) is `tollway speedtest-server`, and what a node runs when it
//! serves tests itself.

pub mod client;
pub mod framed;
pub mod keyfile;
pub mod limits;
pub mod proto;
pub mod receipt;
pub mod server;
pub mod tcpinfo;
pub mod tls;

pub use client::{run_test, TestError, TestSpec};
pub use receipt::{Measurement, Receipt, ReceiptError, VerifiedReceipt};
pub use server::{Server, ServerError, ServerOptions};

/// The port a speed-test server listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 7479;
