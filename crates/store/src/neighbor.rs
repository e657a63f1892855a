//! Per-neighbor state: what the daemon must find again after a crash to keep billing exactly.

use crate::codec::{from_sql, node_from_blob, to_sql};
use rusqlite::{params, Row, Transaction};
use std::fmt;
use std::sync::OnceLock;
use tollway_core::market::{Accrual, Amount, CounterBaseline, LinkLedger, Statement};
use tollway_core::NodeId;

/// Largest encoded note the store accepts, in bytes.
pub const MAX_NOTE_BYTES: usize = 1024;

/// Our payment channel to one neighbor: 16 random bytes, created once when the neighbor is
/// first stored and never changed afterwards (the store refuses a change, see
/// [`StoreError::ChannelChanged`](crate::StoreError::ChannelChanged)). Notes are cumulative per
/// channel, so a new channel would let amounts be promised twice.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelId(pub [u8; 16]);

impl ChannelId {
    /// A fresh channel id from the operating system's random source.
    pub fn random() -> ChannelId {
        let mut b = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
        ChannelId(b)
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelId({self})")
    }
}

/// The latest payment note we issued to a neighbor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedNote {
    /// Cumulative amount the note promises on our channel.
    pub cumulative: Amount,
    /// The signed note as sent, opaque to the store (at most [`MAX_NOTE_BYTES`]).
    pub note: Vec<u8>,
    /// Whether the payee acknowledged receiving it.
    pub acknowledged: bool,
}

/// The highest valid note a neighbor issued to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedNote {
    /// The payer's channel id (its channel to us).
    pub payer_channel: ChannelId,
    /// Cumulative amount the note promises.
    pub cumulative: Amount,
    /// The signed note as received, opaque to the store (at most [`MAX_NOTE_BYTES`]).
    pub note: Vec<u8>,
}

/// Payment state with one neighbor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentState {
    /// Our channel to the neighbor; fixed once stored.
    pub channel: ChannelId,
    /// The latest note we issued, if any.
    pub issued: Option<IssuedNote>,
    /// The highest valid note we received, if any.
    pub received: Option<ReceivedNote>,
}

/// Everything the store keeps about one neighbor, filled by the daemon from the core.
///
/// Written whole by [`Batch::neighbors`](crate::Batch::neighbors): an upsert replaces every field
/// of a stored record except `first_seen_ms` (kept from the first insert) and the payment
/// channel id (which must not change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighborRecord {
    /// The neighbor: the key of the record.
    pub node: NodeId,
    /// When we first stored this neighbor (Unix ms); kept from the first insert.
    pub first_seen_ms: u64,
    /// When this state was last updated (Unix ms).
    pub updated_ms: u64,
    /// The ledger, every field.
    pub ledger: LinkLedger,
    /// Baseline of the nftables counter of bytes received from the neighbor.
    pub rx_counter: CounterBaseline,
    /// Baseline of the tunnel interface's tx byte counter.
    pub tx_counter: CounterBaseline,
    /// Our channel and the latest notes both ways.
    pub payment: PaymentState,
    /// Bytes we sent to the neighbor, cumulative (its statements are accepted up to this).
    pub sent_bytes: u64,
    /// Most bytes sent in one sample lately.
    pub tx_peak: u64,
    /// The neighbor's latest statement as it sent it (`ledger.outbound` is the accepted part).
    pub claimed: Statement,
}

impl NeighborRecord {
    /// A neighbor seen for the first time at `now_ms`: empty ledger, zero baselines, a fresh
    /// random payment channel and no notes.
    pub fn new(node: NodeId, now_ms: u64) -> NeighborRecord {
        NeighborRecord {
            node,
            first_seen_ms: now_ms,
            updated_ms: now_ms,
            ledger: LinkLedger::default(),
            rx_counter: CounterBaseline::default(),
            tx_counter: CounterBaseline::default(),
            payment: PaymentState { channel: ChannelId::random(), issued: None, received: None },
            sent_bytes: 0,
            tx_peak: 0,
            claimed: Statement::default(),
        }
    }

    /// Why this record cannot be stored, if it cannot.
    pub(crate) fn invalid(&self) -> Option<String> {
        let node = self.node;
        let accruals = [
            ("inbound.receiver_owes", self.ledger.inbound.receiver_owes),
            ("inbound.sender_owes", self.ledger.inbound.sender_owes),
            ("outbound.receiver_owes", self.ledger.outbound.receiver_owes),
            ("outbound.sender_owes", self.ledger.outbound.sender_owes),
            ("claimed.receiver_owes", self.claimed.receiver_owes),
            ("claimed.sender_owes", self.claimed.sender_owes),
        ];
        if let Some((name, a)) = accruals.iter().find(|(_, a)| Accrual::new(a.units, a.micros).is_none()) {
            return Some(format!("neighbor {node}: {name}.micros {} is not below 1000000", a.micros));
        }
        for (name, t) in [("first_seen_ms", self.first_seen_ms), ("updated_ms", self.updated_ms)] {
            if t > i64::MAX as u64 {
                return Some(format!("neighbor {node}: {name} {t} is out of range"));
            }
        }
        let issued = self.payment.issued.as_ref().map(|n| ("issued", n.note.len()));
        let received = self.payment.received.as_ref().map(|n| ("received", n.note.len()));
        if let Some((which, len)) = [issued, received].into_iter().flatten().find(|(_, len)| *len > MAX_NOTE_BYTES) {
            return Some(format!("neighbor {node}: {which} note is {len} bytes, more than {MAX_NOTE_BYTES}"));
        }
        None
    }
}

const COLUMNS: &str = "node, first_seen_ms, updated_ms, \
    in_seq, in_bytes, in_receiver_owes_units, in_receiver_owes_micros, in_sender_owes_units, in_sender_owes_micros, \
    out_seq, out_bytes, out_receiver_owes_units, out_receiver_owes_micros, out_sender_owes_units, out_sender_owes_micros, \
    paid, received, rx_counter_instance, rx_counter_value, tx_counter_instance, tx_counter_value, \
    channel, issued_cumulative, issued_note, issued_acked, recv_channel, recv_cumulative, recv_note, \
    sent_bytes, tx_peak, \
    claim_seq, claim_bytes, claim_receiver_owes_units, claim_receiver_owes_micros, claim_sender_owes_units, claim_sender_owes_micros";

fn upsert_sql() -> String {
    let n = COLUMNS.split(',').count();
    let placeholders = (1..=n).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
    let updates = COLUMNS
        .split(',')
        .map(str::trim)
        .filter(|c| *c != "node" && *c != "first_seen_ms")
        .map(|c| format!("{c} = excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("INSERT INTO neighbor ({COLUMNS}) VALUES ({placeholders}) ON CONFLICT (node) DO UPDATE SET {updates} RETURNING id")
}

/// Insert or replace one neighbor's state; returns its row id.
pub(crate) fn upsert(tx: &Transaction<'_>, r: &NeighborRecord) -> rusqlite::Result<i64> {
    static SQL: OnceLock<String> = OnceLock::new();
    let mut stmt = tx.prepare_cached(SQL.get_or_init(upsert_sql))?;
    let (l, p) = (&r.ledger, &r.payment);
    let (i, o) = (&l.inbound, &l.outbound);
    let issued = p.issued.as_ref();
    let recv = p.received.as_ref();
    stmt.query_row(
        params![
            &r.node.0[..],
            r.first_seen_ms as i64,
            r.updated_ms as i64,
            to_sql(i.seq),
            to_sql(i.bytes),
            to_sql(i.receiver_owes.units),
            i.receiver_owes.micros,
            to_sql(i.sender_owes.units),
            i.sender_owes.micros,
            to_sql(o.seq),
            to_sql(o.bytes),
            to_sql(o.receiver_owes.units),
            o.receiver_owes.micros,
            to_sql(o.sender_owes.units),
            o.sender_owes.micros,
            to_sql(l.paid.0),
            to_sql(l.received.0),
            to_sql(r.rx_counter.instance),
            to_sql(r.rx_counter.value),
            to_sql(r.tx_counter.instance),
            to_sql(r.tx_counter.value),
            &p.channel.0[..],
            issued.map(|n| to_sql(n.cumulative.0)),
            issued.map(|n| &n.note[..]),
            issued.map(|n| n.acknowledged),
            recv.map(|n| &n.payer_channel.0[..]),
            recv.map(|n| to_sql(n.cumulative.0)),
            recv.map(|n| &n.note[..]),
            to_sql(r.sent_bytes),
            to_sql(r.tx_peak),
            to_sql(r.claimed.seq),
            to_sql(r.claimed.bytes),
            to_sql(r.claimed.receiver_owes.units),
            r.claimed.receiver_owes.micros,
            to_sql(r.claimed.sender_owes.units),
            r.claimed.sender_owes.micros,
        ],
        |row| row.get(0),
    )
}

pub(crate) fn select_all_sql() -> String {
    format!("SELECT {COLUMNS} FROM neighbor ORDER BY node")
}

/// Decode one row of [`select_all_sql`]. The outer error is SQLite's; the inner one says why a
/// row that SQLite returned is not a valid record.
pub(crate) fn decode(row: &Row<'_>) -> rusqlite::Result<Result<NeighborRecord, String>> {
    let node_blob: Vec<u8> = row.get(0)?;
    let Some(node) = node_from_blob(&node_blob) else {
        return Ok(Err(format!("neighbor key of {} bytes", node_blob.len())));
    };
    let u = |i: usize| -> rusqlite::Result<u64> { row.get::<_, i64>(i).map(from_sql) };
    let accrual = |i: usize| -> rusqlite::Result<Option<Accrual>> {
        let micros: i64 = row.get(i + 1)?;
        Ok(u32::try_from(micros).ok().and_then(|m| Accrual::new(u(i).ok()?, m)))
    };
    let statement = |i: usize| -> rusqlite::Result<Option<Statement>> {
        Ok(match (accrual(i + 2)?, accrual(i + 4)?) {
            (Some(receiver_owes), Some(sender_owes)) => {
                Some(Statement { seq: u(i)?, bytes: u(i + 1)?, receiver_owes, sender_owes })
            }
            _ => None,
        })
    };
    let (Some(inbound), Some(outbound), Some(claimed)) = (statement(3)?, statement(9)?, statement(30)?) else {
        return Ok(Err(format!("neighbor {node}: an accrual's micros is out of range")));
    };
    let channel = |i: usize| -> rusqlite::Result<Option<Result<ChannelId, String>>> {
        let b: Option<Vec<u8>> = row.get(i)?;
        Ok(b.map(|b| {
            <[u8; 16]>::try_from(&b[..])
                .map(ChannelId)
                .map_err(|_| format!("neighbor {node}: channel id of {} bytes", b.len()))
        }))
    };
    let Some(own_channel) = channel(21)? else {
        return Ok(Err(format!("neighbor {node}: no channel id")));
    };
    let own_channel = match own_channel {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    let issued = match (row.get::<_, Option<i64>>(22)?, row.get::<_, Option<Vec<u8>>>(23)?, row.get(24)?) {
        (Some(c), Some(note), Some(acknowledged)) => {
            Some(IssuedNote { cumulative: Amount(from_sql(c)), note, acknowledged })
        }
        (None, None, None) => None,
        _ => return Ok(Err(format!("neighbor {node}: issued note is partly missing"))),
    };
    let received = match (channel(25)?, row.get::<_, Option<i64>>(26)?, row.get::<_, Option<Vec<u8>>>(27)?) {
        (Some(Ok(payer_channel)), Some(c), Some(note)) => {
            Some(ReceivedNote { payer_channel, cumulative: Amount(from_sql(c)), note })
        }
        (Some(Err(e)), _, _) => return Ok(Err(e)),
        (None, None, None) => None,
        _ => return Ok(Err(format!("neighbor {node}: received note is partly missing"))),
    };
    Ok(Ok(NeighborRecord {
        node,
        first_seen_ms: u(1)?,
        updated_ms: u(2)?,
        ledger: LinkLedger { inbound, outbound, paid: Amount(u(15)?), received: Amount(u(16)?) },
        rx_counter: CounterBaseline { instance: u(17)?, value: u(18)? },
        tx_counter: CounterBaseline { instance: u(19)?, value: u(20)? },
        payment: PaymentState { channel: own_channel, issued, received },
        sent_bytes: u(28)?,
        tx_peak: u(29)?,
        claimed,
    }))
}
