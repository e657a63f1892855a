//! # tollway-core
//!
//! The protocol and economics of a tollway node with no I/O: no sockets, no threads, no clock.
//! Time is an argument to every input. The API has four kinds of method, after quinn-proto and
//! smoltcp:
//! - inputs: `Node::handle_*(now, event)`;
//! - commands: operator requests (prices, payments) applied at once;
//! - outputs: [`Node::poll_action`] (what the driver must do) and [`Node::poll_timeout`] (when to
//!   call [`Node::handle_timeout`] next);
//! - getters for status.
//!
//! One driver owns a `Node`, feeds it, and executes its [`Action`]s against the kernel.

pub mod action;
pub mod config;
pub mod identity;
pub mod ids;
pub mod live_check;
pub mod market;
pub mod node;
pub mod quality;
pub mod routing;
pub mod time;
pub mod timer;
pub mod wire;

pub use action::{Action, Endpoint, SessionId, TunnelSpec};
pub use config::CoreConfig;
pub use identity::Identity;
pub use ids::{IfName, NodeId, WgPublicKey};
pub use node::{Neighbor, NeighborState, Node, TunnelStats, DISCOVERY_GROUP};
pub use routing::{LinkCost, Penalty, RoutedNeighbor};
pub use time::{Millis, Now};
