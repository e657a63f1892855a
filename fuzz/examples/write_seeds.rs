//! Writes the seed corpus of the fuzz targets whose inputs this code can make: real encoded
//! control and market messages, discovery datagrams and payment notes, signed with fixed test
//! identities (payer a = seed 0xa1…, payee b = seed 0xb1…, as `payment_note` expects). The seeds
//! of `nft_listing` are captured from the kernel instead (see README.md).
//!
//! `cargo run --locked --example write_seeds` (in `fuzz/`): rewrites `corpus/<target>/seed-*`.

use std::path::Path;
use tollway_core::market::notes::Note;
use tollway_core::market::{Accrual, Amount, Price, Statement};
use tollway_core::wire::control::ControlMessage;
use tollway_core::wire::discovery::{Announce, Discovery, Hello};
use tollway_core::wire::market::MarketMessage;
use tollway_core::Identity;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

fn main() {
    let a = Identity::from_seed(&[0xa1; 32]);
    let b = Identity::from_seed(&[0xb1; 32]);
    let c = Identity::from_seed(&[0xc1; 32]);
    let channel = [7u8; 16];

    // payment_note: genuine notes from a to b, and the ones b must refuse.
    let note = Note::sign(&a, &b.node_id(), &channel, Amount(12_345));
    write("payment_note", "genuine", &note);
    write("payment_note", "genuine-zero", &Note::sign(&a, &b.node_id(), &[0; 16], Amount(0)));
    write("payment_note", "genuine-max", &Note::sign(&a, &b.node_id(), &[0xff; 16], Amount(u64::MAX)));
    write("payment_note", "to-someone-else", &Note::sign(&a, &c.node_id(), &channel, Amount(5)));
    write("payment_note", "from-someone-else", &Note::sign(&c, &b.node_id(), &channel, Amount(5)));
    let mut v2 = note.clone();
    v2[0] = 2;
    write("payment_note", "version-2", &v2);

    // control_decoder: the first byte is the chunk size the stream is fed in, then frames.
    let statement = Statement {
        seq: 42,
        bytes: 66_700_000,
        receiver_owes: Accrual::new(66, 700_000).unwrap(),
        sender_owes: Accrual::new(133, 400_000).unwrap(),
    };
    let messages = [
        (
            "client-hello",
            ControlMessage::ClientHello { version_min: 1, version_max: 1, node: a.node_id(), nonce: [3; 32] },
        ),
        ("server-hello", ControlMessage::ServerHello { version: 1, node: b.node_id(), nonce: [4; 32], sig: [5; 64] }),
        ("client-auth", ControlMessage::ClientAuth { sig: [6; 64] }),
        ("ping", ControlMessage::Ping { nonce: 99 }),
        ("pong", ControlMessage::Pong { nonce: 99 }),
        ("close", ControlMessage::Close { reason: "shutting down".into() }),
        ("ask", ControlMessage::Market(MarketMessage::Ask { seq: 1, price: Price(2_000) })),
        ("bid", ControlMessage::Market(MarketMessage::Bid { ask_seq: 1, price: Price(3_000) })),
        ("decline", ControlMessage::Market(MarketMessage::Decline { ask_seq: 2, reason: "above max_price".into() })),
        ("statement", ControlMessage::Market(MarketMessage::Statement(statement))),
        ("payment", ControlMessage::Market(MarketMessage::Payment { rail: 1, proof: note.clone() })),
        ("payment-ack", ControlMessage::Market(MarketMessage::PaymentAck { rail: 1, cumulative: Amount(12_345) })),
    ];
    let mut stream = vec![5u8];
    for (name, m) in &messages {
        let frame = m.encode_frame();
        write("control_decoder", name, &[&[255u8][..], &frame].concat());
        stream.extend_from_slice(&frame);
    }
    write("control_decoder", "session-in-5-byte-chunks", &stream);

    // discovery_parser: signed datagrams.
    let announce =
        Discovery::Announce(Announce { node: a.node_id(), wg_key: a.wg_public(), unix_ms: 1_790_000_000_000 });
    write("discovery_parser", "announce", &announce.encode_signed(&a));
    let hello = Discovery::Hello(Hello {
        node: b.node_id(),
        wg_key: b.wg_public(),
        to: a.node_id(),
        listen_port: 51_820,
        unix_ms: 1_790_000_000_500,
    });
    write("discovery_parser", "hello", &hello.encode_signed(&b));
    let mut forged = hello.encode_signed(&c);
    forged[10] ^= 1;
    write("discovery_parser", "hello-bad-signature", &forged);
    println!("seeds written under {}/corpus", env!("CARGO_MANIFEST_DIR"));
}
