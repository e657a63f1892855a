//! Market messages on the control session (types 0x20–0x4f): prices, statements, payments.
//!
//! ```text
//! 0x20 Ask        seq u64 | price u64                      my price per MB (units), version seq
//! 0x21 Bid        ask_seq u64 | price u64                  I accept your ask `ask_seq` and pay `price` per MB
//! 0x22 Decline    ask_seq u64 | reason str16               I won't pay your ask `ask_seq`
//! 0x30 Statement  seq u64 | bytes u64 | receiver_owes (u64 units, u32 micros) | sender_owes (same)
//!                 running totals of the bytes I received from you, priced both ways
//! 0x40 Payment    rail u8 | proof bytes16 (≤ MAX_PROOF)    a payment on rail `rail`
//! 0x41 PaymentAck rail u8 | cumulative u64                 I hold your payment up to `cumulative`
//! ```

use super::control::MAX_TEXT;
use super::reader::{DecodeError, Reader, Writer};
use crate::market::{Accrual, Amount, Price, Statement};

pub const T_ASK: u8 = 0x20;
pub const T_BID: u8 = 0x21;
pub const T_DECLINE: u8 = 0x22;
pub const T_STATEMENT: u8 = 0x30;
pub const T_PAYMENT: u8 = 0x40;
pub const T_PAYMENT_ACK: u8 = 0x41;

/// Largest payment proof accepted.
pub const MAX_PROOF: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarketMessage {
    Ask { seq: u64, price: Price },
    Bid { ask_seq: u64, price: Price },
    Decline { ask_seq: u64, reason: String },
    Statement(Statement),
    Payment { rail: u8, proof: Vec<u8> },
    PaymentAck { rail: u8, cumulative: Amount },
}

impl MarketMessage {
    pub fn is_market_type(t: u8) -> bool {
        (0x20..=0x4f).contains(&t)
    }

    pub fn name(&self) -> &'static str {
        match self {
            MarketMessage::Ask { .. } => "ask",
            MarketMessage::Bid { .. } => "bid",
            MarketMessage::Decline { .. } => "decline",
            MarketMessage::Statement(_) => "statement",
            MarketMessage::Payment { .. } => "payment",
            MarketMessage::PaymentAck { .. } => "payment_ack",
        }
    }

    pub fn encode(&self, w: &mut Writer) {
        match self {
            MarketMessage::Ask { seq, price } => {
                w.u8(T_ASK).u64(*seq).u64(price.0);
            }
            MarketMessage::Bid { ask_seq, price } => {
                w.u8(T_BID).u64(*ask_seq).u64(price.0);
            }
            MarketMessage::Decline { ask_seq, reason } => {
                w.u8(T_DECLINE).u64(*ask_seq).short_str(truncate(reason, MAX_TEXT));
            }
            MarketMessage::Statement(s) => {
                w.u8(T_STATEMENT)
                    .u64(s.seq)
                    .u64(s.bytes)
                    .u64(s.receiver_owes.units)
                    .u32(s.receiver_owes.micros)
                    .u64(s.sender_owes.units)
                    .u32(s.sender_owes.micros);
            }
            MarketMessage::Payment { rail, proof } => {
                let proof = &proof[..proof.len().min(MAX_PROOF)];
                w.u8(T_PAYMENT).u8(*rail).u16(proof.len() as u16).bytes(proof);
            }
            MarketMessage::PaymentAck { rail, cumulative } => {
                w.u8(T_PAYMENT_ACK).u8(*rail).u64(cumulative.0);
            }
        }
    }

    /// Decode the body of a message whose type byte `t` was already read.
    pub fn decode(t: u8, r: &mut Reader<'_>) -> Result<MarketMessage, DecodeError> {
        Ok(match t {
            T_ASK => MarketMessage::Ask { seq: r.u64()?, price: Price(r.u64()?) },
            T_BID => MarketMessage::Bid { ask_seq: r.u64()?, price: Price(r.u64()?) },
            T_DECLINE => MarketMessage::Decline { ask_seq: r.u64()?, reason: r.short_str("reason", MAX_TEXT)? },
            T_STATEMENT => {
                let seq = r.u64()?;
                let bytes = r.u64()?;
                let receiver_owes = accrual(r, "receiver_owes")?;
                let sender_owes = accrual(r, "sender_owes")?;
                MarketMessage::Statement(Statement { seq, bytes, receiver_owes, sender_owes })
            }
            T_PAYMENT => {
                let rail = r.u8()?;
                let len = r.u16()? as usize;
                if len > MAX_PROOF {
                    return Err(DecodeError::Invalid { field: "proof", why: "too long" });
                }
                MarketMessage::Payment { rail, proof: r.bytes(len)?.to_vec() }
            }
            T_PAYMENT_ACK => MarketMessage::PaymentAck { rail: r.u8()?, cumulative: Amount(r.u64()?) },
            other => return Err(DecodeError::UnknownType(other)),
        })
    }
}

fn accrual(r: &mut Reader<'_>, field: &'static str) -> Result<Accrual, DecodeError> {
    let units = r.u64()?;
    let micros = r.u32()?;
    Accrual::new(units, micros).ok_or(DecodeError::Invalid { field, why: "micros not below 1,000,000" })
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::control::{decode_stream, ControlMessage};

    fn samples() -> Vec<MarketMessage> {
        vec![
            MarketMessage::Ask { seq: 3, price: Price(2_000) },
            MarketMessage::Bid { ask_seq: 3, price: Price(2_500) },
            MarketMessage::Decline { ask_seq: 4, reason: "above my max price 0.003".into() },
            MarketMessage::Statement(Statement {
                seq: 9,
                bytes: u64::MAX,
                receiver_owes: Accrual { units: 5, micros: 999_999 },
                sender_owes: Accrual { units: u64::MAX, micros: 0 },
            }),
            MarketMessage::Payment { rail: 1, proof: vec![7; MAX_PROOF] },
            MarketMessage::PaymentAck { rail: 1, cumulative: Amount(123) },
        ]
    }

    #[test]
    fn market_messages_round_trip_through_control_frames() {
        let msgs: Vec<ControlMessage> = samples().into_iter().map(ControlMessage::Market).collect();
        let stream: Vec<u8> = msgs.iter().flat_map(|m| m.encode_frame()).collect();
        assert_eq!(decode_stream(&stream).unwrap(), msgs);
    }

    #[test]
    fn invalid_market_messages_are_rejected() {
        let mut micros = ControlMessage::Market(samples()[3].clone()).encode();
        micros[1 + 8 + 8 + 8..1 + 8 + 8 + 8 + 4].copy_from_slice(&1_000_000u32.to_be_bytes());
        let long_proof =
            [vec![T_PAYMENT, 1], ((MAX_PROOF + 1) as u16).to_be_bytes().to_vec(), vec![0; MAX_PROOF + 1]].concat();
        let cases: Vec<(Vec<u8>, DecodeError)> = vec![
            (micros, DecodeError::Invalid { field: "receiver_owes", why: "micros not below 1,000,000" }),
            (long_proof, DecodeError::Invalid { field: "proof", why: "too long" }),
            (vec![T_ASK, 0, 0], DecodeError::Truncated { needed: 6 }),
            (vec![0x2f], DecodeError::UnknownType(0x2f)),
            ([ControlMessage::Market(samples()[0].clone()).encode(), vec![1]].concat(), DecodeError::Trailing(1)),
        ];
        for (input, want) in cases {
            assert_eq!(ControlMessage::decode(&input).unwrap_err(), want);
        }
    }
}
