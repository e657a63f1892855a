//! Signed-note throughput on one core: `cargo run --release -p tollway-core --example bench_notes`.

use std::time::Instant;
use tollway_core::market::{Amount, NotesRail, PaymentRail};
use tollway_core::Identity;

fn main() {
    let payer = Identity::from_seed(&[1; 32]);
    let payee = Identity::from_seed(&[2; 32]);
    let mut rail = NotesRail::new(payer.clone());
    let check = NotesRail::new(payee.clone());
    let n = 20_000u64;
    let t = Instant::now();
    let notes: Vec<Vec<u8>> = (1..=n).map(|i| rail.pay(&payee.node_id(), &[7; 16], Amount(i))).collect();
    let sign = t.elapsed();
    let t = Instant::now();
    for note in &notes {
        check.verify(&payer.node_id(), note).expect("valid");
    }
    let verify = t.elapsed();
    println!(
        "BENCH notes (one core): sign {:.0}/s ({:.1} µs each), verify {:.0}/s ({:.1} µs each), {} notes of {} bytes",
        n as f64 / sign.as_secs_f64(),
        sign.as_secs_f64() * 1e6 / n as f64,
        n as f64 / verify.as_secs_f64(),
        verify.as_secs_f64() * 1e6 / n as f64,
        n,
        notes[0].len()
    );
}
