//! Network egress enforcement for airlock's `filtered` mode.
//!
//! The sandbox's network namespace routes every address to its own loopback, where listeners
//! catch each connection and DNS query; their descriptors are handed to the host-side airlock
//! process, which calls into this crate to decide and relay:
//!
//! - [`policy`]: which names on which ports are allowed (pure).
//! - [`addr`]: the address floor — loopback, private, link-local, CGNAT, ULA, metadata (pure).
//! - [`sni`] / [`http`]: what a connection asks for, from its first bytes (pure parsers).
//! - [`resolve`]: the upstream resolver (a trait, with a UDP implementation).
//! - [`dns`]: the sandbox's DNS answerer: allowed names only, nothing forwarded for the rest.
//! - [`proxy`]: transparent and explicit (HTTP proxy) connections: inspect, decide, relay.
//! - [`inject`] / [`intercept`]: secrets held as placeholders inside, put into requests to
//!   their bound hosts by ending TLS with a per-sandbox CA.
//! - [`journal`]: the JSONL audit trail of every decision.
//!
//! Everything runs on plain threads with blocking `std::net` sockets.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod addr;
mod ctx;
pub mod dns;
pub mod host;
pub mod http;
pub mod inject;
pub mod intercept;
mod intercepted;
pub mod journal;
pub mod policy;
pub mod proxy;
mod relay;
pub mod resolve;
pub mod sni;
mod upstream;

pub use ctx::Ctx;
pub use journal::{Event, Journal, Kind};
pub use policy::{Decision, DomainPattern, EgressPolicy};
pub use resolve::{CachingResolver, Resolver, StaticResolver, UdpResolver};
