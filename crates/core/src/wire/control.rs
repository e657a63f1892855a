//! The control session: a TCP connection between two neighbors' tunnel link-local addresses,
//! carried inside their WireGuard tunnel.
//!
//! Framing: `length u32 | payload`, 1 ≤ length ≤ [`MAX_FRAME`]. Payload: `type u8 | body`, every
//! integer big-endian. Anything malformed closes the session with the decode error as reason.
//!
//! The session starts with a three-message handshake that proves both ends hold the node keys the
//! tunnel was built for and agrees on a protocol version:
//! ```text
//! connector → ClientHello { versions min..=max, node key, nonce_c }
//! acceptor  → ServerHello { version, node key, nonce_s, sig_s(transcript) }
//! connector → ClientAuth  { sig_c(transcript) }
//! ```
//! `transcript` = `tollway/control/v1` ‖ role tag ‖ connector key ‖ acceptor key ‖ nonce_c ‖
//! nonce_s ‖ version, so a signature can't be replayed in another session or role.

use super::market::MarketMessage;
use super::reader::{DecodeError, Reader, Writer};
use crate::ids::NodeId;

/// Largest frame payload accepted or sent.
pub const MAX_FRAME: usize = 64 * 1024;
/// Protocol versions this build speaks.
pub const VERSION_MIN: u16 = 1;
pub const VERSION_MAX: u16 = 1;
/// Longest human-readable text in a message (close reasons).
pub const MAX_TEXT: usize = 256;

const T_CLIENT_HELLO: u8 = 0x01;
const T_SERVER_HELLO: u8 = 0x02;
const T_CLIENT_AUTH: u8 = 0x03;
const T_PING: u8 = 0x10;
const T_PONG: u8 = 0x11;
const T_CLOSE: u8 = 0x1f;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlMessage {
    ClientHello {
        version_min: u16,
        version_max: u16,
        node: NodeId,
        nonce: [u8; 32],
    },
    ServerHello {
        version: u16,
        node: NodeId,
        nonce: [u8; 32],
        sig: [u8; 64],
    },
    ClientAuth {
        sig: [u8; 64],
    },
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    Close {
        reason: String,
    },
    /// Prices, statements and payments (types 0x20–0x4f, see `wire::market`).
    Market(MarketMessage),
}

impl ControlMessage {
    pub fn name(&self) -> &'static str {
        match self {
            ControlMessage::ClientHello { .. } => "client_hello",
            ControlMessage::ServerHello { .. } => "server_hello",
            ControlMessage::ClientAuth { .. } => "client_auth",
            ControlMessage::Ping { .. } => "ping",
            ControlMessage::Pong { .. } => "pong",
            ControlMessage::Close { .. } => "close",
            ControlMessage::Market(m) => m.name(),
        }
    }

    /// The payload (without the length prefix).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            ControlMessage::ClientHello { version_min, version_max, node, nonce } => {
                w.u8(T_CLIENT_HELLO).u16(*version_min).u16(*version_max).bytes(&node.0).bytes(nonce);
            }
            ControlMessage::ServerHello { version, node, nonce, sig } => {
                w.u8(T_SERVER_HELLO).u16(*version).bytes(&node.0).bytes(nonce).bytes(sig);
            }
            ControlMessage::ClientAuth { sig } => {
                w.u8(T_CLIENT_AUTH).bytes(sig);
            }
            ControlMessage::Ping { nonce } => {
                w.u8(T_PING).u64(*nonce);
            }
            ControlMessage::Pong { nonce } => {
                w.u8(T_PONG).u64(*nonce);
            }
            ControlMessage::Close { reason } => {
                let mut end = reason.len().min(MAX_TEXT);
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                w.u8(T_CLOSE).short_str(&reason[..end]);
            }
            ControlMessage::Market(m) => m.encode(&mut w),
        }
        w.buf
    }

    /// The payload with its length prefix, ready to write to the stream.
    pub fn encode_frame(&self) -> Vec<u8> {
        let payload = self.encode();
        let mut v = Vec::with_capacity(4 + payload.len());
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(&payload);
        v
    }

    /// Decode one payload. Never panics; rejects trailing bytes.
    pub fn decode(buf: &[u8]) -> Result<ControlMessage, DecodeError> {
        if buf.is_empty() {
            return Err(DecodeError::Empty);
        }
        if buf.len() > MAX_FRAME {
            return Err(DecodeError::TooLarge { len: buf.len(), max: MAX_FRAME });
        }
        let mut r = Reader::new(buf);
        let msg = match r.u8()? {
            T_CLIENT_HELLO => {
                let version_min = r.u16()?;
                let version_max = r.u16()?;
                if version_min > version_max {
                    return Err(DecodeError::Invalid { field: "version_min", why: "above version_max" });
                }
                ControlMessage::ClientHello { version_min, version_max, node: NodeId(r.array()?), nonce: r.array()? }
            }
            T_SERVER_HELLO => ControlMessage::ServerHello {
                version: r.u16()?,
                node: NodeId(r.array()?),
                nonce: r.array()?,
                sig: r.array()?,
            },
            T_CLIENT_AUTH => ControlMessage::ClientAuth { sig: r.array()? },
            T_PING => ControlMessage::Ping { nonce: r.u64()? },
            T_PONG => ControlMessage::Pong { nonce: r.u64()? },
            T_CLOSE => ControlMessage::Close { reason: r.short_str("reason", MAX_TEXT)? },
            t if MarketMessage::is_market_type(t) => ControlMessage::Market(MarketMessage::decode(t, &mut r)?),
            other => return Err(DecodeError::UnknownType(other)),
        };
        r.finish()?;
        Ok(msg)
    }
}

/// The bytes both ends sign during the handshake. `role` is `b"server"` or `b"client"`.
pub fn transcript(
    role: &[u8],
    connector: &NodeId,
    acceptor: &NodeId,
    nonce_c: &[u8; 32],
    nonce_s: &[u8; 32],
    version: u16,
) -> Vec<u8> {
    let mut w = Writer::new();
    w.bytes(b"tollway/control/v1")
        .short_str(std::str::from_utf8(role).unwrap_or("?"))
        .bytes(&connector.0)
        .bytes(&acceptor.0)
        .bytes(nonce_c)
        .bytes(nonce_s)
        .u16(version);
    w.buf
}

/// Splits a byte stream into frames, enforcing [`MAX_FRAME`] before buffering a frame's body.
#[derive(Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    pub fn new() -> Self {
        FrameDecoder { buf: Vec::new() }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame's payload, `Ok(None)` if more bytes are needed, or an error for an
    /// empty or oversized frame (after which the stream is unusable).
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, DecodeError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len == 0 {
            return Err(DecodeError::Empty);
        }
        if len > MAX_FRAME {
            return Err(DecodeError::TooLarge { len, max: MAX_FRAME });
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        let frame = self.buf[4..4 + len].to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(frame))
    }
}

/// Decode every complete message in `bytes` fed in one go; used by the fuzz target and tests.
pub fn decode_stream(bytes: &[u8]) -> Result<Vec<ControlMessage>, DecodeError> {
    let mut d = FrameDecoder::new();
    d.push(bytes);
    let mut out = Vec::new();
    while let Some(f) = d.next_frame()? {
        out.push(ControlMessage::decode(&f)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<ControlMessage> {
        vec![
            ControlMessage::ClientHello { version_min: 1, version_max: 3, node: NodeId([5; 32]), nonce: [9; 32] },
            ControlMessage::ServerHello { version: 1, node: NodeId([6; 32]), nonce: [7; 32], sig: [8; 64] },
            ControlMessage::ClientAuth { sig: [1; 64] },
            ControlMessage::Ping { nonce: u64::MAX },
            ControlMessage::Pong { nonce: 0 },
            ControlMessage::Close { reason: "bye – ünïcode".into() },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for m in samples() {
            assert_eq!(ControlMessage::decode(&m.encode()).unwrap(), m);
        }
        let stream: Vec<u8> = samples().iter().flat_map(|m| m.encode_frame()).collect();
        assert_eq!(decode_stream(&stream).unwrap(), samples());
    }

    #[test]
    fn frames_split_anywhere_reassemble() {
        let stream: Vec<u8> = samples().iter().flat_map(|m| m.encode_frame()).collect();
        for cut in 0..stream.len() {
            let mut d = FrameDecoder::new();
            let mut got = Vec::new();
            d.push(&stream[..cut]);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(ControlMessage::decode(&f).unwrap());
            }
            d.push(&stream[cut..]);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(ControlMessage::decode(&f).unwrap());
            }
            assert_eq!(got, samples());
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn long_close_reasons_are_truncated_on_a_char_boundary() {
        let m = ControlMessage::Close { reason: "é".repeat(300) };
        match ControlMessage::decode(&m.encode()).unwrap() {
            ControlMessage::Close { reason } => assert!(reason.len() <= MAX_TEXT && reason.chars().all(|c| c == 'é')),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn invalid_inputs_are_rejected_with_reasons() {
        let mut bad_versions = samples()[0].encode();
        bad_versions[1..5].copy_from_slice(&[0, 3, 0, 1]);
        let mut bad_utf8 = vec![T_CLOSE, 0, 2, 0xff, 0xfe];
        let too_long_text =
            [vec![T_CLOSE], ((MAX_TEXT + 1) as u16).to_be_bytes().to_vec(), vec![b'a'; MAX_TEXT + 1]].concat();
        let cases: Vec<(Vec<u8>, DecodeError)> = vec![
            (vec![], DecodeError::Empty),
            (vec![0x99], DecodeError::UnknownType(0x99)),
            (vec![T_PING, 0, 0], DecodeError::Truncated { needed: 6 }),
            (vec![T_PONG, 0, 0, 0, 0, 0, 0, 0, 0, 1], DecodeError::Trailing(1)),
            (bad_versions, DecodeError::Invalid { field: "version_min", why: "above version_max" }),
            (std::mem::take(&mut bad_utf8), DecodeError::Invalid { field: "reason", why: "not UTF-8" }),
            (too_long_text, DecodeError::Invalid { field: "reason", why: "too long" }),
            (vec![T_PING; MAX_FRAME + 1], DecodeError::TooLarge { len: MAX_FRAME + 1, max: MAX_FRAME }),
        ];
        for (input, want) in cases {
            assert_eq!(ControlMessage::decode(&input).unwrap_err(), want);
        }
        let mut d = FrameDecoder::new();
        d.push(&[0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(DecodeError::Empty));
        let mut d = FrameDecoder::new();
        d.push(&((MAX_FRAME + 1) as u32).to_be_bytes());
        assert_eq!(d.next_frame(), Err(DecodeError::TooLarge { len: MAX_FRAME + 1, max: MAX_FRAME }));
    }

    proptest! {
        #[test]
        fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = ControlMessage::decode(&bytes);
            let _ = decode_stream(&bytes);
        }
    }
}
