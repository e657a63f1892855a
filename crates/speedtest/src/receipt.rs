//! The receipt a speed-test server signs at the end of a test, and its verification.
//!
//! Layout, version 1 (all integers big-endian, [`RECEIPT_LEN`] bytes):
//! ```text
//! version u8 = 1
//! server key (32) | client node id (32) | client nonce (32) | server nonce (32) | path label (32)
//! start unix ms u64
//! up bytes u64 | up duration µs u64          (measured by the server: what it received)
//! down bytes u64 | down duration µs u64      (sent by the server, acknowledged by the client)
//! rtt idle µs u32                            (server: fastest of its application pings, before the transfer)
//! rtt loaded µs u32                          (server: its kernel's smoothed TCP RTT during the download)
//! up loss ppm u32                            (client-reported: its TCP retransmissions during the upload)
//! down loss ppm u32                          (server: its TCP retransmissions during the download)
//! Ed25519 signature (64) by the server key over `tollway/speedtest/receipt/v1` + every byte before it
//! ```
//! The client's fresh nonce, its node id and the path label are inside the signed bytes, so a
//! receipt proves that this server measured these figures for this client's test, and no other:
//! a forwarder on the path can neither make one up nor hand back an old one.

use tollway_core::identity::{verify, SignatureError};
use tollway_core::wire::{DecodeError, Reader, Writer};
use tollway_core::{Identity, NodeId};

pub const RECEIPT_VERSION: u8 = 1;
const RECEIPT_DOMAIN: &[u8] = b"tollway/speedtest/receipt/v1";
/// The encoded size of a version-1 receipt.
pub const RECEIPT_LEN: usize = 1 + 5 * 32 + 5 * 8 + 4 * 4 + 64;
/// No direction of a test can have lasted longer than this (far above any server's limit).
pub const MAX_DURATION_US: u64 = 3_600_000_000;
/// Loss is a fraction in parts per million.
pub const PPM: u32 = 1_000_000;

/// What a server measured in one test (the signed part of a receipt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measurement {
    /// The server's Ed25519 key (what the client pinned).
    pub server_key: NodeId,
    /// The node that ran the test (it proved it holds this key during the session).
    pub client: NodeId,
    pub client_nonce: [u8; 32],
    pub server_nonce: [u8; 32],
    /// 32 bytes the client chose, e.g. the node id of the neighbor it tested through.
    pub path_label: [u8; 32],
    /// When the server accepted the test (its clock).
    pub start_unix_ms: u64,
    /// Payload bytes the server received during the upload, and over how long (from telling
    /// the client to start to reading its end marker).
    pub up_bytes: u64,
    pub up_duration_us: u64,
    /// Payload bytes the server sent during the download, all acknowledged by the client, and
    /// over how long (from its first byte to the client's acknowledgement).
    pub down_bytes: u64,
    pub down_duration_us: u64,
    /// The fastest of a few application-level ping/pongs before the transfer (server-measured).
    pub rtt_idle_us: u32,
    /// The server's smoothed TCP RTT during the download, averaged (server-measured, under load).
    pub rtt_loaded_us: u32,
    /// TCP retransmissions per segment sent during the upload, as the client's kernel counted
    /// them (client-reported).
    pub up_loss_ppm: u32,
    /// TCP retransmissions per segment sent during the download (server-measured).
    pub down_loss_ppm: u32,
}

/// A measurement with the server's signature over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub measurement: Measurement,
    pub signature: [u8; 64],
}

/// Why a receipt was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("receipt does not decode: {0}")]
    Decode(#[from] DecodeError),
    #[error("receipt is signed by server key {got}, but the pinned key is {pinned}")]
    WrongServerKey { pinned: NodeId, got: NodeId },
    #[error("receipt is for another test (client nonce {got}, expected {expected}): replayed or mixed up")]
    WrongNonce { expected: String, got: String },
    #[error("receipt names client {got}, expected {expected}")]
    WrongClient { expected: NodeId, got: NodeId },
    #[error("receipt is for path {got}, expected {expected}")]
    WrongPath { expected: String, got: String },
    #[error("receipt signature does not verify against server key {key}: {why}")]
    BadSignature { key: NodeId, why: SignatureError },
}

fn invalid(field: &'static str, why: &'static str) -> DecodeError {
    DecodeError::Invalid { field, why }
}

impl Measurement {
    fn write(&self, w: &mut Writer) {
        w.u8(RECEIPT_VERSION)
            .bytes(&self.server_key.0)
            .bytes(&self.client.0)
            .bytes(&self.client_nonce)
            .bytes(&self.server_nonce)
            .bytes(&self.path_label)
            .u64(self.start_unix_ms)
            .u64(self.up_bytes)
            .u64(self.up_duration_us)
            .u64(self.down_bytes)
            .u64(self.down_duration_us)
            .u32(self.rtt_idle_us)
            .u32(self.rtt_loaded_us)
            .u32(self.up_loss_ppm)
            .u32(self.down_loss_ppm);
    }

    fn signed_message(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(RECEIPT_DOMAIN);
        self.write(&mut w);
        w.buf
    }

    /// Sign as the server (`server` must be the identity whose key is `server_key`).
    pub fn sign(self, server: &Identity) -> Receipt {
        debug_assert_eq!(server.node_id(), self.server_key);
        let signature = server.sign(&self.signed_message());
        Receipt { measurement: self, signature }
    }

    /// Upload goodput in bit/s (0 for an empty upload).
    pub fn up_bps(&self) -> f64 {
        bps(self.up_bytes, self.up_duration_us)
    }

    /// Download goodput in bit/s (0 for an empty download).
    pub fn down_bps(&self) -> f64 {
        bps(self.down_bytes, self.down_duration_us)
    }
}

fn bps(bytes: u64, us: u64) -> f64 {
    if us == 0 {
        0.0
    } else {
        bytes as f64 * 8.0 * 1e6 / us as f64
    }
}

impl Receipt {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.measurement.write(&mut w);
        w.bytes(&self.signature);
        debug_assert_eq!(w.buf.len(), RECEIPT_LEN);
        w.buf
    }

    /// Parse (no signature check: see [`verify`](Receipt::verify)). Rejects other versions,
    /// truncated or over-long input and out-of-range figures.
    pub fn decode(bytes: &[u8]) -> Result<Receipt, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != RECEIPT_VERSION {
            return Err(DecodeError::Version(version));
        }
        let m = Measurement {
            server_key: NodeId(r.array()?),
            client: NodeId(r.array()?),
            client_nonce: r.array()?,
            server_nonce: r.array()?,
            path_label: r.array()?,
            start_unix_ms: r.u64()?,
            up_bytes: r.u64()?,
            up_duration_us: r.u64()?,
            down_bytes: r.u64()?,
            down_duration_us: r.u64()?,
            rtt_idle_us: r.u32()?,
            rtt_loaded_us: r.u32()?,
            up_loss_ppm: r.u32()?,
            down_loss_ppm: r.u32()?,
        };
        let signature = r.array()?;
        r.finish()?;
        for (field, us) in [("up duration", m.up_duration_us), ("down duration", m.down_duration_us)] {
            if us > MAX_DURATION_US {
                return Err(invalid(field, "longer than an hour"));
            }
        }
        if m.up_bytes > 0 && m.up_duration_us == 0 {
            return Err(invalid("up duration", "zero with bytes received"));
        }
        if m.down_bytes > 0 && m.down_duration_us == 0 {
            return Err(invalid("down duration", "zero with bytes sent"));
        }
        for (field, ppm) in [("up loss", m.up_loss_ppm), ("down loss", m.down_loss_ppm)] {
            if ppm > PPM {
                return Err(invalid(field, "more than 1,000,000 ppm"));
            }
        }
        Ok(Receipt { measurement: m, signature })
    }

    /// Check that this receipt was signed by `pinned` for the test the caller ran: its own
    /// fresh nonce, its own node id, the path it tested.
    pub fn verify(
        self,
        pinned: &NodeId,
        client_nonce: &[u8; 32],
        client: &NodeId,
        path_label: &[u8; 32],
    ) -> Result<VerifiedReceipt, ReceiptError> {
        let m = &self.measurement;
        if m.server_key != *pinned {
            return Err(ReceiptError::WrongServerKey { pinned: *pinned, got: m.server_key });
        }
        verify(pinned, &m.signed_message(), &self.signature)
            .map_err(|why| ReceiptError::BadSignature { key: *pinned, why })?;
        if m.client_nonce != *client_nonce {
            return Err(ReceiptError::WrongNonce {
                expected: hex::encode(client_nonce),
                got: hex::encode(m.client_nonce),
            });
        }
        if m.client != *client {
            return Err(ReceiptError::WrongClient { expected: *client, got: m.client });
        }
        if m.path_label != *path_label {
            return Err(ReceiptError::WrongPath { expected: hex::encode(path_label), got: hex::encode(m.path_label) });
        }
        Ok(VerifiedReceipt(self))
    }

    /// Decode and verify in one step.
    pub fn decode_and_verify(
        bytes: &[u8],
        pinned: &NodeId,
        client_nonce: &[u8; 32],
        client: &NodeId,
        path_label: &[u8; 32],
    ) -> Result<VerifiedReceipt, ReceiptError> {
        Receipt::decode(bytes)?.verify(pinned, client_nonce, client, path_label)
    }
}

/// A receipt whose signature, server key, nonce, client and path were checked. Only
/// [`Receipt::verify`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedReceipt(Receipt);

impl VerifiedReceipt {
    pub fn receipt(&self) -> &Receipt {
        &self.0
    }

    pub fn measurement(&self) -> &Measurement {
        &self.0.measurement
    }

    pub fn into_receipt(self) -> Receipt {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(server: &Identity, client: &Identity) -> Measurement {
        Measurement {
            server_key: server.node_id(),
            client: client.node_id(),
            client_nonce: [7; 32],
            server_nonce: [8; 32],
            path_label: [9; 32],
            start_unix_ms: 1_790_000_000_000,
            up_bytes: 25_000_000,
            up_duration_us: 10_000_000,
            down_bytes: 12_500_000,
            down_duration_us: 5_000_000,
            rtt_idle_us: 1_200,
            rtt_loaded_us: 25_000,
            up_loss_ppm: 100,
            down_loss_ppm: 2_000,
        }
    }

    fn ids() -> (Identity, Identity) {
        (Identity::from_seed(&[1; 32]), Identity::from_seed(&[2; 32]))
    }

    fn check(bytes: &[u8], server: &Identity, client: &Identity) -> Result<VerifiedReceipt, ReceiptError> {
        Receipt::decode_and_verify(bytes, &server.node_id(), &[7; 32], &client.node_id(), &[9; 32])
    }

    #[test]
    fn round_trip_and_verify() {
        let (s, c) = ids();
        let r = sample(&s, &c).sign(&s);
        let bytes = r.encode();
        assert_eq!(bytes.len(), RECEIPT_LEN);
        assert_eq!(Receipt::decode(&bytes), Ok(r.clone()));
        let v = check(&bytes, &s, &c).expect("verifies");
        assert_eq!(v.receipt(), &r);
        assert_eq!(v.measurement().up_bps(), 20e6);
        assert_eq!(v.measurement().down_bps(), 20e6);
    }

    #[test]
    fn invalid_inputs_are_rejected_with_a_reason() {
        let (s, c) = ids();
        let good = sample(&s, &c).sign(&s).encode();
        let set = |at: usize, bytes: &[u8]| {
            let mut b = good.clone();
            b[at..at + bytes.len()].copy_from_slice(bytes);
            b
        };
        // Offsets: version 0, keys/nonces/label 1..161, start 161, up bytes 169, up dur 177,
        // down bytes 185, down dur 193, rtt idle 201, rtt loaded 205, up loss 209, down loss 213.
        let table: Vec<(&str, Vec<u8>, DecodeError)> = vec![
            ("empty", vec![], DecodeError::Truncated { needed: 1 }),
            ("version 0", set(0, &[0]), DecodeError::Version(0)),
            ("version 2", set(0, &[2]), DecodeError::Version(2)),
            ("one byte too long", [good.clone(), vec![0]].concat(), DecodeError::Trailing(1)),
            (
                "up duration over an hour",
                set(177, &(MAX_DURATION_US + 1).to_be_bytes()),
                invalid("up duration", "longer than an hour"),
            ),
            (
                "down duration over an hour",
                set(193, &u64::MAX.to_be_bytes()),
                invalid("down duration", "longer than an hour"),
            ),
            ("up bytes in no time", set(177, &0u64.to_be_bytes()), invalid("up duration", "zero with bytes received")),
            ("down bytes in no time", set(193, &0u64.to_be_bytes()), invalid("down duration", "zero with bytes sent")),
            ("up loss over 100 %", set(209, &(PPM + 1).to_be_bytes()), invalid("up loss", "more than 1,000,000 ppm")),
            (
                "down loss over 100 %",
                set(213, &u32::MAX.to_be_bytes()),
                invalid("down loss", "more than 1,000,000 ppm"),
            ),
        ];
        for (what, bytes, want) in table {
            assert_eq!(Receipt::decode(&bytes), Err(want.clone()), "{what}");
            assert_eq!(check(&bytes, &s, &c).unwrap_err(), ReceiptError::Decode(want), "{what}");
        }
        // Edge values that are valid: empty directions, exactly 100 % loss, exactly an hour.
        let mut m = sample(&s, &c);
        (m.up_bytes, m.up_duration_us, m.down_loss_ppm, m.down_duration_us) = (0, 0, PPM, MAX_DURATION_US);
        let r = m.sign(&s);
        assert_eq!(Receipt::decode(&r.encode()), Ok(r));
    }

    #[test]
    fn truncated_at_every_length_is_rejected() {
        let (s, c) = ids();
        let good = sample(&s, &c).sign(&s).encode();
        for len in 0..good.len() {
            match Receipt::decode(&good[..len]) {
                Err(DecodeError::Truncated { .. }) => {}
                other => panic!("{len} bytes: {other:?}"),
            }
            assert!(matches!(check(&good[..len], &s, &c), Err(ReceiptError::Decode(_))), "{len}");
        }
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let (s, c) = ids();
        let good = sample(&s, &c).sign(&s).encode();
        for bit in 0..good.len() * 8 {
            let mut b = good.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(check(&b, &s, &c).is_err(), "flipping bit {bit} went unnoticed");
        }
    }

    #[test]
    fn forged_signature_is_rejected() {
        let (s, c) = ids();
        let mallory = Identity::from_seed(&[3; 32]);
        // Figures improved and signed by someone else, but claiming the pinned server's key.
        let mut m = sample(&s, &c);
        m.down_bytes *= 10;
        let forged = Receipt { signature: mallory.sign(&m.signed_message()), measurement: m };
        match check(&forged.encode(), &s, &c) {
            Err(ReceiptError::BadSignature { key, why: SignatureError::Mismatch }) => assert_eq!(key, s.node_id()),
            other => panic!("{other:?}"),
        }
        // A genuine signature with one figure changed afterwards.
        let mut r = sample(&s, &c).sign(&s);
        r.measurement.up_bytes += 1;
        assert!(matches!(check(&r.encode(), &s, &c), Err(ReceiptError::BadSignature { .. })));
        // An all-zero signature.
        let mut r = sample(&s, &c).sign(&s);
        r.signature = [0; 64];
        assert!(matches!(check(&r.encode(), &s, &c), Err(ReceiptError::BadSignature { .. })));
    }

    #[test]
    fn replayed_receipt_of_another_test_is_rejected() {
        let (s, c) = ids();
        // A genuine receipt from an earlier test (another nonce), presented for this one.
        let mut old = sample(&s, &c);
        old.client_nonce = [0x55; 32];
        let old = old.sign(&s).encode();
        match check(&old, &s, &c) {
            Err(ReceiptError::WrongNonce { expected, got }) => {
                assert_eq!((expected, got), (hex::encode([7u8; 32]), hex::encode([0x55u8; 32])))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn receipt_for_another_client_or_path_or_server_is_rejected() {
        let (s, c) = ids();
        let other = Identity::from_seed(&[4; 32]);
        // Another client's genuine receipt (same nonce and path, by coincidence or copying).
        let theirs = sample(&s, &other).sign(&s).encode();
        assert_eq!(
            check(&theirs, &s, &c).unwrap_err(),
            ReceiptError::WrongClient { expected: c.node_id(), got: other.node_id() }
        );
        // Our genuine receipt, for another path (e.g. through another neighbor).
        let mut m = sample(&s, &c);
        m.path_label = [0xaa; 32];
        assert!(matches!(check(&m.sign(&s).encode(), &s, &c), Err(ReceiptError::WrongPath { .. })));
        // A genuine receipt by another server (validly signed by that server's own key).
        let mut m = sample(&other, &c);
        m.server_key = other.node_id();
        let by_other = m.sign(&other).encode();
        assert_eq!(
            check(&by_other, &s, &c).unwrap_err(),
            ReceiptError::WrongServerKey { pinned: s.node_id(), got: other.node_id() }
        );
    }

    #[test]
    fn a_receipt_is_not_valid_as_a_signature_of_anything_else() {
        // Domain separation: the same key's signature over the bare measurement (no domain tag)
        // is not a receipt signature.
        let (s, c) = ids();
        let m = sample(&s, &c);
        let mut w = Writer::new();
        m.write(&mut w);
        let r = Receipt { signature: s.sign(&w.buf), measurement: m };
        assert!(matches!(check(&r.encode(), &s, &c), Err(ReceiptError::BadSignature { .. })));
    }
}
