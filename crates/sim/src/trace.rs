//! The run's trace: every action and delivery, hashed as it happens (and kept on request).

use crate::{Millis, NodeIdx};
use sha2::{Digest, Sha256};
use std::fmt::Write;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEntry {
    pub at: Millis,
    /// The node concerned, or `None` for world events (links, starts and stops, handshakes).
    pub node: Option<NodeIdx>,
    pub what: String,
}

pub(crate) struct Trace {
    hasher: Sha256,
    len: u64,
    keep: bool,
    entries: Vec<TraceEntry>,
    buf: String,
}

impl Default for Trace {
    fn default() -> Self {
        Trace { hasher: Sha256::new(), len: 0, keep: false, entries: Vec::new(), buf: String::new() }
    }
}

impl Trace {
    pub(crate) fn record(&mut self, at: Millis, node: NodeIdx, what: std::fmt::Arguments<'_>) {
        self.push(at, Some(node), what);
    }

    pub(crate) fn note(&mut self, at: Millis, what: std::fmt::Arguments<'_>) {
        self.push(at, None, what);
    }

    fn push(&mut self, at: Millis, node: Option<NodeIdx>, what: std::fmt::Arguments<'_>) {
        self.buf.clear();
        let _ = write!(self.buf, "{what}");
        let who = node.map_or(u64::MAX, |n| n.0 as u64);
        self.hasher.update(at.0.to_be_bytes());
        self.hasher.update(who.to_be_bytes());
        self.hasher.update((self.buf.len() as u64).to_be_bytes());
        self.hasher.update(self.buf.as_bytes());
        self.len += 1;
        if self.keep {
            self.entries.push(TraceEntry { at, node, what: self.buf.clone() });
        }
    }

    pub(crate) fn hash_hex(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn keep(&mut self, keep: bool) {
        self.keep = keep;
    }

    pub(crate) fn entries(&self) -> &[TraceEntry] {
        &self.entries
    }
}
