//! Payment rails, and the first one: signed promissory notes.
//!
//! A note names payer, payee, a channel id and the CUMULATIVE total promised on that channel,
//! signed by the payer (Ed25519). The payee keeps the highest valid note: it is the proof of what
//! was paid. Because notes are cumulative, re-sending one whose delivery was uncertain can never
//! pay twice, and a replayed or older note proves nothing new.
//!
//! Note layout (rail id 1):
//! `version u8 = 1 | payer (32) | payee (32) | channel (16) | cumulative u64 | signature (64)`,
//! the signature covering `tollway/note/v1` followed by every byte before it.

use super::money::Amount;
use crate::identity::{verify, Identity};
use crate::ids::NodeId;
use crate::wire::{DecodeError, Reader, Writer};

/// Rail ids on the wire.
pub const RAIL_NOTES: u8 = 1;

/// A payment channel: one per payer and payee, chosen by the payer.
pub type ChannelId = [u8; 16];

/// What a valid proof proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proven {
    pub channel: ChannelId,
    pub cumulative: Amount,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RailError {
    #[error("malformed proof: {0}")]
    Malformed(DecodeError),
    #[error("unsupported note version {0}")]
    Version(u8),
    #[error("signed as {claimed}, but it came from {actual}")]
    WrongPayer { claimed: String, actual: String },
    #[error("addressed to {0}, not to us")]
    WrongPayee(String),
    #[error("bad signature: {0}")]
    BadSignature(String),
}

/// How value moves between neighbors. Sans-IO: a rail that needs the network (a chain, a mint)
/// would return its pending work as actions; the notes rail needs none.
pub trait PaymentRail: Send {
    fn id(&self) -> u8;
    fn name(&self) -> &'static str;
    /// A proof that we have paid `payee` a cumulative `cumulative` on `channel`.
    fn pay(&mut self, payee: &NodeId, channel: &ChannelId, cumulative: Amount) -> Vec<u8>;
    /// Check a proof that `payer` (the neighbor it arrived from) paid us.
    fn verify(&self, payer: &NodeId, proof: &[u8]) -> Result<Proven, RailError>;
}

const NOTE_VERSION: u8 = 1;
const NOTE_DOMAIN: &[u8] = b"tollway/note/v1";

/// A decoded note (signature not yet checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub payer: NodeId,
    pub payee: NodeId,
    pub channel: ChannelId,
    pub cumulative: Amount,
    pub signature: [u8; 64],
}

impl Note {
    fn body(payer: &NodeId, payee: &NodeId, channel: &ChannelId, cumulative: Amount) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(NOTE_VERSION).bytes(&payer.0).bytes(&payee.0).bytes(channel).u64(cumulative.0);
        w.buf
    }

    fn signed_message(body: &[u8]) -> Vec<u8> {
        [NOTE_DOMAIN, body].concat()
    }

    pub fn sign(id: &Identity, payee: &NodeId, channel: &ChannelId, cumulative: Amount) -> Vec<u8> {
        let mut body = Self::body(&id.node_id(), payee, channel, cumulative);
        let sig = id.sign(&Self::signed_message(&body));
        body.extend_from_slice(&sig);
        body
    }

    pub fn parse(bytes: &[u8]) -> Result<Note, RailError> {
        let mut r = Reader::new(bytes);
        let m = RailError::Malformed;
        let version = r.u8().map_err(m)?;
        if version != NOTE_VERSION {
            return Err(RailError::Version(version));
        }
        let note = Note {
            payer: NodeId(r.array().map_err(m)?),
            payee: NodeId(r.array().map_err(m)?),
            channel: r.array().map_err(m)?,
            cumulative: Amount(r.u64().map_err(m)?),
            signature: r.array().map_err(m)?,
        };
        r.finish().map_err(m)?;
        Ok(note)
    }
}

/// The signed-promissory-notes rail.
pub struct NotesRail {
    identity: Identity,
}

impl NotesRail {
    pub fn new(identity: Identity) -> NotesRail {
        NotesRail { identity }
    }
}

impl PaymentRail for NotesRail {
    fn id(&self) -> u8 {
        RAIL_NOTES
    }

    fn name(&self) -> &'static str {
        "notes"
    }

    fn pay(&mut self, payee: &NodeId, channel: &ChannelId, cumulative: Amount) -> Vec<u8> {
        Note::sign(&self.identity, payee, channel, cumulative)
    }

    fn verify(&self, payer: &NodeId, proof: &[u8]) -> Result<Proven, RailError> {
        let note = Note::parse(proof)?;
        if note.payer != *payer {
            return Err(RailError::WrongPayer { claimed: note.payer.short(), actual: payer.short() });
        }
        if note.payee != self.identity.node_id() {
            return Err(RailError::WrongPayee(note.payee.short()));
        }
        let body = Note::body(&note.payer, &note.payee, &note.channel, note.cumulative);
        verify(&note.payer, &Note::signed_message(&body), &note.signature)
            .map_err(|e| RailError::BadSignature(e.to_string()))?;
        Ok(Proven { channel: note.channel, cumulative: note.cumulative })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids() -> (Identity, Identity, Identity) {
        (Identity::from_seed(&[1; 32]), Identity::from_seed(&[2; 32]), Identity::from_seed(&[3; 32]))
    }

    #[test]
    fn a_note_verifies_for_its_payee_only() {
        let (a, b, c) = ids();
        let mut rail_a = NotesRail::new(a.clone());
        let proof = rail_a.pay(&b.node_id(), &[9; 16], Amount(500));
        let rail_b = NotesRail::new(b.clone());
        assert_eq!(rail_b.verify(&a.node_id(), &proof), Ok(Proven { channel: [9; 16], cumulative: Amount(500) }));
        assert!(matches!(NotesRail::new(c.clone()).verify(&a.node_id(), &proof), Err(RailError::WrongPayee(_))));
        assert!(matches!(rail_b.verify(&c.node_id(), &proof), Err(RailError::WrongPayer { .. })));
    }

    #[test]
    fn forged_and_altered_notes_are_rejected() {
        let (a, b, c) = ids();
        // c signs a note claiming to be from a.
        let mut forged = Note::body(&a.node_id(), &b.node_id(), &[1; 16], Amount(10_000));
        let sig = c.sign(&Note::signed_message(&forged));
        forged.extend_from_slice(&sig);
        let rail_b = NotesRail::new(b.clone());
        assert!(matches!(rail_b.verify(&a.node_id(), &forged), Err(RailError::BadSignature(_))));
        // A genuine note with the amount raised.
        let mut genuine = NotesRail::new(a.clone()).pay(&b.node_id(), &[1; 16], Amount(10));
        genuine[1 + 32 + 32 + 16 + 7] = 0xff;
        assert!(matches!(rail_b.verify(&a.node_id(), &genuine), Err(RailError::BadSignature(_))));
        assert!(matches!(rail_b.verify(&a.node_id(), &genuine[..50]), Err(RailError::Malformed(_))));
        let mut v2 = genuine.clone();
        v2[0] = 2;
        assert_eq!(rail_b.verify(&a.node_id(), &v2), Err(RailError::Version(2)));
    }

    proptest! {
        #[test]
        fn verifying_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let (a, b, _) = ids();
            let _ = NotesRail::new(b).verify(&a.node_id(), &bytes);
        }
    }
}
