//! The speed-test protocol's messages, carried inside the TLS session.
//!
//! Every message is a frame: `type u8 | length u16 | payload` (big-endian). Data frames carry
//! up to [`MAX_DATA`] bytes of filler; every other type has a fixed or small bounded length,
//! checked before its payload is read. A test goes:
//! ```text
//! client                                   server
//! Hello (id, nonce, path, secs, max bytes) →
//!                                          ← Challenge (server nonce, granted secs, rate cap) | Refused
//! Auth (signature over the transcript)     →
//!                                          ← Ping (×PINGS, each answered by a Pong)
//! Pong                                     →
//!                                          ← StartUpload
//! Data … UploadEnd (bytes)                 →
//!                                          ← Data … DownloadEnd (bytes)
//! DownloadAck (bytes, TCP counters)        →
//!                                          ← Receipt | Refused
//! ```
//! The client's signature covers both nonces, the server's key, the client's id, the path label
//! and a value exported from the TLS session (RFC 8446 §7.5), so it cannot be replayed into
//! another session, to another server, or relayed through one.

use crate::receipt::Receipt;
use tollway_core::wire::{DecodeError, Reader, Writer};
use tollway_core::NodeId;

pub const PROTOCOL_VERSION: u8 = 1;
/// The largest data frame payload.
pub const MAX_DATA: usize = 16 * 1024;
/// The largest non-data payload (a Refused with its text is the longest).
pub const MAX_CONTROL: usize = 512;
/// How many application-level pings the server sends before the transfer.
pub const PINGS: u32 = 5;
/// The longest reason text in a Refused.
pub const MAX_DETAIL: usize = 200;
/// TLS exporter label for the client's signature (RFC 8446 §7.5).
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-tollway-speedtest-v1";
const CLIENT_AUTH_DOMAIN: &[u8] = b"tollway/speedtest/client/v1";

const T_HELLO: u8 = 0x01;
const T_AUTH: u8 = 0x02;
const T_PONG: u8 = 0x03;
const T_UPLOAD_END: u8 = 0x04;
const T_DOWNLOAD_ACK: u8 = 0x05;
pub const T_DATA: u8 = 0x10;
const T_CHALLENGE: u8 = 0x81;
const T_REFUSED: u8 = 0x82;
const T_PING: u8 = 0x83;
const T_START_UPLOAD: u8 = 0x84;
const T_DOWNLOAD_END: u8 = 0x85;
const T_RECEIPT: u8 = 0x86;

/// Why a server refused or stopped a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// Every test slot is taken; try again after `retry_after_secs`.
    Busy,
    /// This client (or its address) asked for too many tests lately.
    RateLimited,
    /// The protocol version is not one the server speaks.
    Version,
    /// The client's signature did not verify.
    AuthFailed,
    /// The client broke the protocol (details in the text).
    Protocol,
    /// The server is shutting down.
    ShuttingDown,
    /// A reason code this version does not know (kept so that the client can say so).
    Other(u8),
}

impl RefuseReason {
    fn code(self) -> u8 {
        match self {
            RefuseReason::Busy => 1,
            RefuseReason::RateLimited => 2,
            RefuseReason::Version => 3,
            RefuseReason::AuthFailed => 4,
            RefuseReason::Protocol => 5,
            RefuseReason::ShuttingDown => 6,
            RefuseReason::Other(c) => c,
        }
    }

    fn from_code(c: u8) -> RefuseReason {
        match c {
            1 => RefuseReason::Busy,
            2 => RefuseReason::RateLimited,
            3 => RefuseReason::Version,
            4 => RefuseReason::AuthFailed,
            5 => RefuseReason::Protocol,
            6 => RefuseReason::ShuttingDown,
            c => RefuseReason::Other(c),
        }
    }
}

impl std::fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RefuseReason::Busy => f.write_str("server busy"),
            RefuseReason::RateLimited => f.write_str("too many tests"),
            RefuseReason::Version => f.write_str("unsupported protocol version"),
            RefuseReason::AuthFailed => f.write_str("client authentication failed"),
            RefuseReason::Protocol => f.write_str("protocol error"),
            RefuseReason::ShuttingDown => f.write_str("server shutting down"),
            RefuseReason::Other(c) => write!(f, "reason code {c}"),
        }
    }
}

/// The client's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub version: u8,
    pub client: NodeId,
    pub client_nonce: [u8; 32],
    pub path_label: [u8; 32],
    pub up_secs: u16,
    pub down_secs: u16,
    /// The most the server may send in the download (the client's own cap: a test through a
    /// paid neighbor costs money).
    pub max_down_bytes: u64,
}

/// The client's TCP counters over the upload (from its kernel's TCP_INFO).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpCounters {
    pub data_segs_out: u32,
    pub retrans_segs: u32,
}

/// Messages the client sends, other than data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMsg {
    Hello(Hello),
    Auth {
        signature: [u8; 64],
    },
    Pong {
        seq: u32,
    },
    /// The upload is over: how many payload bytes the client sent.
    UploadEnd {
        bytes: u64,
    },
    /// The download arrived: how many payload bytes, and the client's TCP counters since the
    /// upload began (complete by now: the server received every upload byte before it began
    /// the download, and the client sends no data during it).
    DownloadAck {
        bytes: u64,
        tcp: TcpCounters,
    },
}

/// Messages the server sends, other than data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMsg {
    /// The server's nonce, the seconds it grants each way, and its rate cap per direction
    /// (kbit/s, 0 for none), which the client keeps to in its upload.
    Challenge {
        version: u8,
        server_nonce: [u8; 32],
        up_secs: u16,
        down_secs: u16,
        max_rate_kbit: u32,
    },
    Refused {
        reason: RefuseReason,
        retry_after_secs: u16,
        detail: String,
    },
    Ping {
        seq: u32,
    },
    StartUpload,
    DownloadEnd {
        bytes: u64,
    },
    Receipt(Box<Receipt>),
}

/// A frame's header, parsed and bounded before its payload is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub len: usize,
}

pub const HEADER_LEN: usize = 3;

impl Header {
    /// Parse a header; rejects unknown types and payloads longer than their type allows.
    /// `from_client` picks the set of types this side may receive.
    pub fn parse(b: [u8; HEADER_LEN], from_client: bool) -> Result<Header, DecodeError> {
        let kind = b[0];
        let len = u16::from_be_bytes([b[1], b[2]]) as usize;
        let max = match (kind, from_client) {
            (T_DATA, _) => MAX_DATA,
            (T_HELLO | T_AUTH | T_PONG | T_UPLOAD_END | T_DOWNLOAD_ACK, true) => MAX_CONTROL,
            (T_CHALLENGE | T_REFUSED | T_PING | T_START_UPLOAD | T_DOWNLOAD_END | T_RECEIPT, false) => MAX_CONTROL,
            _ => return Err(DecodeError::UnknownType(kind)),
        };
        if len > max {
            return Err(DecodeError::TooLarge { len, max });
        }
        if kind == T_DATA && len == 0 {
            return Err(DecodeError::Empty);
        }
        Ok(Header { kind, len })
    }

    pub fn is_data(&self) -> bool {
        self.kind == T_DATA
    }
}

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    debug_assert!(payload.len() <= MAX_CONTROL.max(MAX_DATA));
    let mut v = Vec::with_capacity(HEADER_LEN + payload.len());
    v.push(kind);
    v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// The header of a data frame of `len` bytes (1..=MAX_DATA).
pub fn data_header(len: usize) -> [u8; HEADER_LEN] {
    debug_assert!((1..=MAX_DATA).contains(&len));
    let l = (len as u16).to_be_bytes();
    [T_DATA, l[0], l[1]]
}

impl ClientMsg {
    /// The whole frame, header included.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        let kind = match self {
            ClientMsg::Hello(h) => {
                w.u8(h.version)
                    .bytes(&h.client.0)
                    .bytes(&h.client_nonce)
                    .bytes(&h.path_label)
                    .u16(h.up_secs)
                    .u16(h.down_secs)
                    .u64(h.max_down_bytes);
                T_HELLO
            }
            ClientMsg::Auth { signature } => {
                w.bytes(signature);
                T_AUTH
            }
            ClientMsg::Pong { seq } => {
                w.u32(*seq);
                T_PONG
            }
            ClientMsg::UploadEnd { bytes } => {
                w.u64(*bytes);
                T_UPLOAD_END
            }
            ClientMsg::DownloadAck { bytes, tcp } => {
                w.u64(*bytes).u32(tcp.data_segs_out).u32(tcp.retrans_segs);
                T_DOWNLOAD_ACK
            }
        };
        frame(kind, &w.buf)
    }

    /// Decode the payload of a non-data frame whose header came from a client.
    pub fn decode(header: Header, payload: &[u8]) -> Result<ClientMsg, DecodeError> {
        let mut r = Reader::new(payload);
        let msg = match header.kind {
            T_HELLO => ClientMsg::Hello(Hello {
                version: r.u8()?,
                client: NodeId(r.array()?),
                client_nonce: r.array()?,
                path_label: r.array()?,
                up_secs: r.u16()?,
                down_secs: r.u16()?,
                max_down_bytes: r.u64()?,
            }),
            T_AUTH => ClientMsg::Auth { signature: r.array()? },
            T_PONG => ClientMsg::Pong { seq: r.u32()? },
            T_UPLOAD_END => ClientMsg::UploadEnd { bytes: r.u64()? },
            T_DOWNLOAD_ACK => {
                let bytes = r.u64()?;
                let tcp = TcpCounters { data_segs_out: r.u32()?, retrans_segs: r.u32()? };
                if tcp.retrans_segs > tcp.data_segs_out {
                    return Err(DecodeError::Invalid { field: "retransmitted segments", why: "more than sent" });
                }
                ClientMsg::DownloadAck { bytes, tcp }
            }
            other => return Err(DecodeError::UnknownType(other)),
        };
        r.finish()?;
        Ok(msg)
    }
}

impl ServerMsg {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        let kind = match self {
            ServerMsg::Challenge { version, server_nonce, up_secs, down_secs, max_rate_kbit } => {
                w.u8(*version).bytes(server_nonce).u16(*up_secs).u16(*down_secs).u32(*max_rate_kbit);
                T_CHALLENGE
            }
            ServerMsg::Refused { reason, retry_after_secs, detail } => {
                let mut d = detail.as_str();
                while d.len() > MAX_DETAIL {
                    // Cut at a character boundary.
                    let mut cut = MAX_DETAIL;
                    while !d.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    d = &d[..cut];
                }
                w.u8(reason.code()).u16(*retry_after_secs).short_str(d);
                T_REFUSED
            }
            ServerMsg::Ping { seq } => {
                w.u32(*seq);
                T_PING
            }
            ServerMsg::StartUpload => T_START_UPLOAD,
            ServerMsg::DownloadEnd { bytes } => {
                w.u64(*bytes);
                T_DOWNLOAD_END
            }
            ServerMsg::Receipt(r) => {
                w.bytes(&r.encode());
                T_RECEIPT
            }
        };
        frame(kind, &w.buf)
    }

    /// Decode the payload of a non-data frame whose header came from a server.
    pub fn decode(header: Header, payload: &[u8]) -> Result<ServerMsg, DecodeError> {
        let mut r = Reader::new(payload);
        let msg = match header.kind {
            T_CHALLENGE => ServerMsg::Challenge {
                version: r.u8()?,
                server_nonce: r.array()?,
                up_secs: r.u16()?,
                down_secs: r.u16()?,
                max_rate_kbit: r.u32()?,
            },
            T_REFUSED => ServerMsg::Refused {
                reason: RefuseReason::from_code(r.u8()?),
                retry_after_secs: r.u16()?,
                detail: r.short_str("detail", MAX_DETAIL)?,
            },
            T_PING => ServerMsg::Ping { seq: r.u32()? },
            T_START_UPLOAD => ServerMsg::StartUpload,
            T_DOWNLOAD_END => ServerMsg::DownloadEnd { bytes: r.u64()? },
            T_RECEIPT => ServerMsg::Receipt(Box::new(Receipt::decode(r.bytes(r.remaining())?)?)),
            other => return Err(DecodeError::UnknownType(other)),
        };
        r.finish()?;
        Ok(msg)
    }
}

/// What the client signs to prove it holds its node key, bound to this session.
pub fn client_transcript(
    server_key: &NodeId,
    hello: &Hello,
    server_nonce: &[u8; 32],
    tls_exporter: &[u8; 32],
) -> Vec<u8> {
    let mut w = Writer::new();
    w.bytes(CLIENT_AUTH_DOMAIN)
        .bytes(&server_key.0)
        .bytes(&hello.client.0)
        .bytes(&hello.client_nonce)
        .bytes(server_nonce)
        .bytes(&hello.path_label)
        .u16(hello.up_secs)
        .u16(hello.down_secs)
        .u64(hello.max_down_bytes)
        .bytes(tls_exporter);
    w.buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipt::Measurement;
    use tollway_core::Identity;

    fn client_msgs() -> Vec<ClientMsg> {
        vec![
            ClientMsg::Hello(Hello {
                version: PROTOCOL_VERSION,
                client: NodeId([1; 32]),
                client_nonce: [2; 32],
                path_label: [3; 32],
                up_secs: 10,
                down_secs: 5,
                max_down_bytes: u64::MAX,
            }),
            ClientMsg::Auth { signature: [4; 64] },
            ClientMsg::Pong { seq: 3 },
            ClientMsg::UploadEnd { bytes: 123 },
            ClientMsg::DownloadAck { bytes: 456, tcp: TcpCounters { data_segs_out: 10, retrans_segs: 1 } },
        ]
    }

    fn server_msgs() -> Vec<ServerMsg> {
        let s = Identity::from_seed(&[1; 32]);
        let receipt = Measurement {
            server_key: s.node_id(),
            client: NodeId([2; 32]),
            client_nonce: [3; 32],
            server_nonce: [4; 32],
            path_label: [5; 32],
            start_unix_ms: 1,
            up_bytes: 2,
            up_duration_us: 3,
            down_bytes: 4,
            down_duration_us: 5,
            rtt_idle_us: 6,
            rtt_loaded_us: 7,
            up_loss_ppm: 8,
            down_loss_ppm: 9,
        }
        .sign(&s);
        vec![
            ServerMsg::Challenge {
                version: 1,
                server_nonce: [9; 32],
                up_secs: 10,
                down_secs: 10,
                max_rate_kbit: 20_000,
            },
            ServerMsg::Refused { reason: RefuseReason::Busy, retry_after_secs: 30, detail: "all 4 slots busy".into() },
            ServerMsg::Refused { reason: RefuseReason::Other(200), retry_after_secs: 0, detail: String::new() },
            ServerMsg::Ping { seq: 7 },
            ServerMsg::StartUpload,
            ServerMsg::DownloadEnd { bytes: 1 << 40 },
            ServerMsg::Receipt(Box::new(receipt)),
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for m in client_msgs() {
            let f = m.encode();
            let h = Header::parse(f[..3].try_into().unwrap(), true).unwrap();
            assert_eq!(h.len, f.len() - 3);
            assert_eq!(ClientMsg::decode(h, &f[3..]), Ok(m.clone()));
            // A server never accepts what only servers send, and vice versa.
            assert_eq!(Header::parse(f[..3].try_into().unwrap(), false), Err(DecodeError::UnknownType(f[0])));
        }
        for m in server_msgs() {
            let f = m.encode();
            let h = Header::parse(f[..3].try_into().unwrap(), false).unwrap();
            assert_eq!(ServerMsg::decode(h, &f[3..]), Ok(m.clone()));
            assert_eq!(Header::parse(f[..3].try_into().unwrap(), true), Err(DecodeError::UnknownType(f[0])));
        }
    }

    #[test]
    fn truncated_and_padded_payloads_are_rejected() {
        for m in client_msgs() {
            let f = m.encode();
            let h = Header { kind: f[0], len: f.len() - 3 };
            for len in 0..f.len() - 3 {
                assert!(
                    matches!(ClientMsg::decode(h, &f[3..3 + len]), Err(DecodeError::Truncated { .. })),
                    "{m:?} at {len}"
                );
            }
            let padded = [&f[3..], &[0][..]].concat();
            assert_eq!(ClientMsg::decode(h, &padded), Err(DecodeError::Trailing(1)), "{m:?}");
        }
        for m in server_msgs() {
            let f = m.encode();
            let h = Header { kind: f[0], len: f.len() - 3 };
            for len in 0..f.len() - 3 {
                assert!(ServerMsg::decode(h, &f[3..3 + len]).is_err(), "{m:?} at {len}");
            }
            let padded = [&f[3..], &[0][..]].concat();
            assert_eq!(ServerMsg::decode(h, &padded), Err(DecodeError::Trailing(1)), "{m:?}");
        }
    }

    #[test]
    fn headers_are_bounded_before_any_payload_is_read() {
        let table: Vec<([u8; 3], bool, Result<Header, DecodeError>)> = vec![
            ([T_DATA, 0x40, 0x00], true, Ok(Header { kind: T_DATA, len: MAX_DATA })),
            ([T_DATA, 0x40, 0x01], true, Err(DecodeError::TooLarge { len: MAX_DATA + 1, max: MAX_DATA })),
            ([T_DATA, 0, 0], false, Err(DecodeError::Empty)),
            ([T_HELLO, 0xff, 0xff], true, Err(DecodeError::TooLarge { len: 65535, max: MAX_CONTROL })),
            ([T_RECEIPT, 0x02, 0x01], false, Err(DecodeError::TooLarge { len: 513, max: MAX_CONTROL })),
            ([0x00, 0, 0], true, Err(DecodeError::UnknownType(0))),
            ([0xff, 0, 0], false, Err(DecodeError::UnknownType(0xff))),
        ];
        for (bytes, from_client, want) in table {
            assert_eq!(Header::parse(bytes, from_client), want, "{bytes:?}");
        }
    }

    #[test]
    fn invalid_field_values_are_rejected() {
        let h = Header { kind: T_DOWNLOAD_ACK, len: 16 };
        let mut p = Writer::new();
        p.u64(1).u32(5).u32(6);
        assert_eq!(
            ClientMsg::decode(h, &p.buf),
            Err(DecodeError::Invalid { field: "retransmitted segments", why: "more than sent" })
        );
        // A Refused whose text is too long or not UTF-8.
        let h = Header { kind: T_REFUSED, len: 0 };
        let mut p = Writer::new();
        p.u8(1).u16(0).u16(MAX_DETAIL as u16 + 1).bytes(&[b'x'; MAX_DETAIL + 1]);
        assert_eq!(ServerMsg::decode(h, &p.buf), Err(DecodeError::Invalid { field: "detail", why: "too long" }));
        let mut p = Writer::new();
        p.u8(1).u16(0).u16(2).bytes(&[0xff, 0xfe]);
        assert_eq!(ServerMsg::decode(h, &p.buf), Err(DecodeError::Invalid { field: "detail", why: "not UTF-8" }));
    }

    #[test]
    fn a_long_refusal_text_is_cut_to_fit() {
        let m = ServerMsg::Refused { reason: RefuseReason::Protocol, retry_after_secs: 0, detail: "é".repeat(300) };
        let f = m.encode();
        let h = Header::parse(f[..3].try_into().unwrap(), false).unwrap();
        match ServerMsg::decode(h, &f[3..]).unwrap() {
            ServerMsg::Refused { detail, .. } => assert_eq!(detail, "é".repeat(MAX_DETAIL / 2)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_client_transcript_binds_every_field() {
        let hello = match &client_msgs()[0] {
            ClientMsg::Hello(h) => h.clone(),
            _ => unreachable!(),
        };
        let base = client_transcript(&NodeId([9; 32]), &hello, &[8; 32], &[7; 32]);
        let mut variants = vec![
            client_transcript(&NodeId([0; 32]), &hello, &[8; 32], &[7; 32]),
            client_transcript(&NodeId([9; 32]), &hello, &[0; 32], &[7; 32]),
            client_transcript(&NodeId([9; 32]), &hello, &[8; 32], &[0; 32]),
        ];
        for change in 0..6 {
            let mut h = hello.clone();
            match change {
                0 => h.client = NodeId([0; 32]),
                1 => h.client_nonce = [0; 32],
                2 => h.path_label = [0; 32],
                3 => h.up_secs += 1,
                4 => h.down_secs += 1,
                _ => h.max_down_bytes -= 1,
            }
            variants.push(client_transcript(&NodeId([9; 32]), &h, &[8; 32], &[7; 32]));
        }
        for v in variants {
            assert_ne!(v, base);
        }
    }
}
