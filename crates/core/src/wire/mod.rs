//! Everything a neighbor can send us, parsed once into typed values.
//!
//! Two channels: discovery datagrams on the physical link (signed, fixed size) and the control
//! session inside the tunnel (length-delimited frames with a size limit). Decoders never panic and
//! never allocate more than the input's (bounded) size; every rejection names its reason.

pub mod control;
pub mod discovery;
pub mod market;
mod reader;

pub use reader::{DecodeError, Reader, Writer};
