//! Helpers shared by the integration tests.
#![allow(dead_code)]

use tollway_core::market::{Accrual, Amount, CounterBaseline, LinkLedger, Statement};
use tollway_core::NodeId;
use tollway_store::{ChannelId, IssuedNote, NeighborRecord, PaymentState, ReceivedNote};

pub fn node(i: u8) -> NodeId {
    let mut b = [0u8; 32];
    b[0] = i;
    b[31] = 0xa5;
    NodeId(b)
}

/// A record where every number is `v` (micros capped to be valid) and both notes are present.
pub fn record_all(node: NodeId, v: u64, channel: ChannelId) -> NeighborRecord {
    let acc = Accrual { units: v, micros: (v % 1_000_000) as u32 };
    let st = Statement { seq: v, bytes: v, receiver_owes: acc, sender_owes: acc };
    NeighborRecord {
        node,
        first_seen_ms: 1_000,
        updated_ms: 2_000,
        ledger: LinkLedger { inbound: st, outbound: st, paid: Amount(v), received: Amount(v) },
        rx_counter: CounterBaseline { instance: v, value: v },
        tx_counter: CounterBaseline { instance: v, value: v },
        payment: PaymentState {
            channel,
            issued: Some(IssuedNote { cumulative: Amount(v), note: vec![1, 2, 3], acknowledged: false }),
            received: Some(ReceivedNote { payer_channel: ChannelId([9; 16]), cumulative: Amount(v), note: vec![4] }),
        },
        sent_bytes: v,
        tx_peak: v,
        claimed: st,
    }
}
