//! Discovery datagrams, sent by IPv6 link-local multicast (Announce) and unicast (Hello) on the
//! physical interfaces.
//!
//! Layout (all integers big-endian):
//! ```text
//! magic "TWAY" | version u8 = 1 | kind u8 | body | Ed25519 signature (64)
//! Announce body: node key (32) | WireGuard key (32) | unix_ms u64
//! Hello body:    node key (32) | WireGuard key (32) | to node key (32) | listen port u16 | unix_ms u64
//! ```
//! The signature covers the domain tag `tollway/discovery/v1` followed by every byte before it.
//! An Announce says "I am here"; a Hello, sent to one neighbor, says "and here is the port of the
//! tunnel I made for you". Both carry a timestamp: receivers reject stale ones and, per sender,
//! anything not newer than the last accepted.

use super::reader::{DecodeError, Reader, Writer};
use crate::identity::{verify, Identity, SignatureError};
use crate::ids::{NodeId, WgPublicKey};

pub const MAGIC: [u8; 4] = *b"TWAY";
pub const VERSION: u8 = 1;
const SIG_DOMAIN: &[u8] = b"tollway/discovery/v1";
const KIND_ANNOUNCE: u8 = 1;
const KIND_HELLO: u8 = 2;
/// No valid discovery datagram is longer than this; receivers read at most this many bytes.
pub const MAX_LEN: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    pub node: NodeId,
    pub wg_key: WgPublicKey,
    pub unix_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub node: NodeId,
    pub wg_key: WgPublicKey,
    pub to: NodeId,
    pub listen_port: u16,
    pub unix_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    Announce(Announce),
    Hello(Hello),
}

impl Discovery {
    pub fn sender(&self) -> &NodeId {
        match self {
            Discovery::Announce(a) => &a.node,
            Discovery::Hello(h) => &h.node,
        }
    }

    pub fn wg_key(&self) -> &WgPublicKey {
        match self {
            Discovery::Announce(a) => &a.wg_key,
            Discovery::Hello(h) => &h.wg_key,
        }
    }

    pub fn unix_ms(&self) -> u64 {
        match self {
            Discovery::Announce(a) => a.unix_ms,
            Discovery::Hello(h) => h.unix_ms,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            Discovery::Announce(_) => "announce",
            Discovery::Hello(_) => "hello",
        }
    }

    /// Encode and sign with `id` (whose node id must be the message's sender).
    pub fn encode_signed(&self, id: &Identity) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(&MAGIC).u8(VERSION);
        match self {
            Discovery::Announce(a) => {
                w.u8(KIND_ANNOUNCE).bytes(&a.node.0).bytes(&a.wg_key.0).u64(a.unix_ms);
            }
            Discovery::Hello(h) => {
                w.u8(KIND_HELLO).bytes(&h.node.0).bytes(&h.wg_key.0).bytes(&h.to.0).u16(h.listen_port).u64(h.unix_ms);
            }
        }
        let sig = id.sign(&signed_bytes(&w.buf));
        w.bytes(&sig);
        w.buf
    }
}

fn signed_bytes(body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(SIG_DOMAIN.len() + body.len());
    v.extend_from_slice(SIG_DOMAIN);
    v.extend_from_slice(body);
    v
}

/// A datagram that parsed but whose signature has not been checked yet. Receivers do cheap
/// checks (freshness, replay, table space) before paying for [`Parsed::verify`].
#[derive(Debug)]
pub struct Parsed<'a> {
    pub msg: Discovery,
    body: &'a [u8],
    sig: [u8; 64],
}

impl Parsed<'_> {
    pub fn verify(self) -> Result<Discovery, SignatureError> {
        verify(self.msg.sender(), &signed_bytes(self.body), &self.sig)?;
        Ok(self.msg)
    }
}

/// Parse a datagram. Never panics; rejects anything not exactly one well-formed message.
pub fn parse(buf: &[u8]) -> Result<Parsed<'_>, DecodeError> {
    if buf.len() > MAX_LEN {
        return Err(DecodeError::TooLarge { len: buf.len(), max: MAX_LEN });
    }
    let mut r = Reader::new(buf);
    if r.array::<4>()? != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = r.u8()?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let kind = r.u8()?;
    let node = NodeId(r.array()?);
    let wg_key = WgPublicKey(r.array()?);
    let msg = match kind {
        KIND_ANNOUNCE => Discovery::Announce(Announce { node, wg_key, unix_ms: r.u64()? }),
        KIND_HELLO => {
            let to = NodeId(r.array()?);
            let listen_port = r.u16()?;
            if listen_port == 0 {
                return Err(DecodeError::Invalid { field: "listen_port", why: "zero" });
            }
            Discovery::Hello(Hello { node, wg_key, to, listen_port, unix_ms: r.u64()? })
        }
        other => return Err(DecodeError::UnknownType(other)),
    };
    let body_len = r.position();
    let sig = r.array::<64>()?;
    r.finish()?;
    Ok(Parsed { msg, body: &buf[..body_len], sig })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids() -> (Identity, Identity) {
        (Identity::from_seed(&[1; 32]), Identity::from_seed(&[2; 32]))
    }

    fn hello(a: &Identity, b: &Identity) -> Discovery {
        Discovery::Hello(Hello {
            node: a.node_id(),
            wg_key: a.wg_public(),
            to: b.node_id(),
            listen_port: 51900,
            unix_ms: 1_700_000_000_000,
        })
    }

    #[test]
    fn announce_and_hello_round_trip_and_verify() {
        let (a, b) = ids();
        let ann = Discovery::Announce(Announce { node: a.node_id(), wg_key: a.wg_public(), unix_ms: 42 });
        for msg in [ann, hello(&a, &b)] {
            let bytes = msg.encode_signed(&a);
            assert!(bytes.len() <= MAX_LEN);
            let parsed = parse(&bytes).unwrap();
            assert_eq!(parsed.msg, msg);
            assert_eq!(parsed.verify().unwrap(), msg);
        }
    }

    #[test]
    fn forged_signature_is_rejected() {
        let (a, b) = ids();
        // b signs a message claiming to come from a.
        let bytes = hello(&a, &b).encode_signed(&b);
        assert_eq!(parse(&bytes).unwrap().verify(), Err(SignatureError::Mismatch));
        // Any flipped bit in the body breaks the signature.
        let good = hello(&a, &b).encode_signed(&a);
        for i in 6..good.len() - 64 {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            if let Ok(p) = parse(&bad) {
                assert!(p.verify().is_err(), "flipping byte {i} went unnoticed");
            }
        }
    }

    #[test]
    fn invalid_inputs_are_rejected_with_reasons() {
        let (a, b) = ids();
        let good = hello(&a, &b).encode_signed(&a);
        let mut zero_port = good.clone();
        zero_port[6 + 96] = 0;
        zero_port[6 + 97] = 0;
        let mut bad_kind = good.clone();
        bad_kind[5] = 9;
        let mut bad_version = good.clone();
        bad_version[4] = 2;
        let cases: Vec<(Vec<u8>, DecodeError)> = vec![
            (vec![], DecodeError::Truncated { needed: 4 }),
            (b"XWAY".to_vec(), DecodeError::BadMagic),
            (bad_version, DecodeError::Version(2)),
            (bad_kind, DecodeError::UnknownType(9)),
            (good[..good.len() - 1].to_vec(), DecodeError::Truncated { needed: 1 }),
            ([good.clone(), vec![0]].concat(), DecodeError::Trailing(1)),
            (vec![0; MAX_LEN + 1], DecodeError::TooLarge { len: MAX_LEN + 1, max: MAX_LEN }),
            (zero_port, DecodeError::Invalid { field: "listen_port", why: "zero" }),
        ];
        for (input, want) in cases {
            assert_eq!(parse(&input).unwrap_err(), want, "input {input:?}");
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(p) = parse(&bytes) {
                let _ = p.verify();
            }
        }

        #[test]
        fn prefixed_garbage_never_panics(tail in proptest::collection::vec(any::<u8>(), 0..200), kind in 0u8..4) {
            let mut bytes = MAGIC.to_vec();
            bytes.push(VERSION);
            bytes.push(kind);
            bytes.extend(tail);
            let _ = parse(&bytes);
        }
    }
}
