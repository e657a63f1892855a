//! The market: money, prices, negotiation, the ledger, payments and enforcement decisions.

pub mod config;
pub mod junk;
pub mod ledger;
pub mod money;
pub mod neighbor;
pub mod notes;
pub mod policy;

pub use config::{BidPolicy, EnforcementPolicy, MarketConfig};
pub use junk::{JunkChange, JunkLimit, JunkWatch};
pub use ledger::{CounterBaseline, LinkLedger, Statement};
pub use money::{Accrual, Amount, Balance, Currency, Price, BYTES_PER_MB};
pub use neighbor::{
    Enforcement, IssuedNote, LogLine, MarketRecord, NeighborLogs, NeighborMarket, OurBid, OverclaimChange,
    ReceivedNote, TheirBid, UsageDelta, DEFAULT_OVERCLAIM_SLACK, OVERCLAIM_QUIET,
};
pub use notes::{ChannelId, NotesRail, PaymentRail, Proven, RailError, RAIL_NOTES};
pub use policy::{Ingress, ShapeGroup, ShapedNeighbor, TrafficPolicy};
