//! Feeds arbitrary bytes to the payment-note parser and to the notes rail's verifier, as the
//! payee (b) checking a proof that arrived from its neighbor a, and checks that only a's own
//! genuine note for b is ever accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tollway_core::market::notes::Note;
use tollway_core::market::{NotesRail, PaymentRail, RailError};
use tollway_core::{Identity, NodeId};

/// The seeds' identities: payer a (seed 0xa1...), payee b (seed 0xb1...), and c (seed
/// 0xc1...), who signs some seeds too.
struct Parties {
    payer: Identity,
    other: Identity,
    payee: NodeId,
    payee_rail: NotesRail,
}

fn parties() -> &'static Parties {
    static P: OnceLock<Parties> = OnceLock::new();
    P.get_or_init(|| {
        let payee = Identity::from_seed(&[0xb1; 32]);
        Parties {
            payer: Identity::from_seed(&[0xa1; 32]),
            other: Identity::from_seed(&[0xc1; 32]),
            payee: payee.node_id(),
            payee_rail: NotesRail::new(payee),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let p = parties();
    let payer = p.payer.node_id();
    match p.payee_rail.verify(&payer, data) {
        Ok(proven) => {
            // Ed25519 signatures are deterministic: an accepted proof is byte for byte the note
            // a would sign for these terms. Anything else accepted would be a forgery.
            let genuine = Note::sign(&p.payer, &p.payee, &proven.channel, proven.cumulative);
            assert_eq!(genuine, data, "accepted a proof that a did not sign");
        }
        Err(RailError::Malformed(_) | RailError::Version(_)) => assert!(Note::parse(data).is_err()),
        Err(_) => assert!(Note::parse(data).is_ok()),
    }
    // The same bytes, as if they came from whoever the note names as its payer: accepted only
    // if that payer really signed exactly these bytes (only a and c sign the seeds; no one else's
    // signature can be made by mutation).
    if let Ok(note) = Note::parse(data) {
        match p.payee_rail.verify(&note.payer, data) {
            Ok(proven) => {
                let signer = [&p.payer, &p.other]
                    .into_iter()
                    .find(|id| id.node_id() == note.payer)
                    .unwrap_or_else(|| panic!("accepted a note from {:?}, whose key signed no seed", note.payer));
                assert_eq!(Note::sign(signer, &p.payee, &proven.channel, proven.cumulative), data);
            }
            Err(e @ (RailError::WrongPayer { .. } | RailError::Malformed(_) | RailError::Version(_))) => {
                panic!("a parsed note from its own payer was refused as {e:?}")
            }
            Err(_) => {}
        }
    }
});
