//! The market: money, prices, negotiation, the ledger, payments and enforcement decisions.

pub mod ledger;
pub mod money;
pub mod notes;

pub use ledger::{CounterBaseline, LinkLedger, Statement};
pub use money::{Accrual, Amount, Balance, Currency, Price, BYTES_PER_MB};
pub use notes::{ChannelId, NotesRail, PaymentRail, Proven, RailError, RAIL_NOTES};
