//! # tollway-daemon
//!
//! The daemon around the pure core: configuration, identity storage, the driver thread that owns
//! the core and executes its actions against the kernel, the network I/O tasks and the operator
//! API. See ARCHITECTURE.md for the data flow.

pub mod api;
pub mod config;
pub mod destinations;
pub mod driver;
pub mod health;
pub mod http;
pub mod mesh_config;
pub mod net;
pub mod quality_config;
pub mod readers;
pub mod run;
pub mod status;
pub mod storage;
pub mod warnings;

pub use config::Config;
pub use run::run;
