//! airlock-engine: orchestration of named sandboxes. The engine is the only code that changes
//! sandboxes and the only writer of the state store ([`store`]).
//!
//! - [`engine::Engine`]: the operations (create, start, stop, rm, list, status, reconcile)
//!   over a [`backend::Backend`] that runs the sandboxes;
//! - [`api`]: the HTTP/1.1 + JSON API on a Unix socket (docs/api.md);
//! - [`client::Client`]: the CLI's client of that API, starting the engine when needed;
//! - [`live_policy`]: `allow`/`deny` on a sandbox's egress allowlist, and the supervisor's
//!   policy socket that puts it in force while the sandbox runs;
//! - [`paths`]: where the socket and the state live;
//! - [`supervisor::SupervisorBackend`]: the real backend — one supervisor process per named
//!   sandbox (`airlock __supervise`), detached from the engine.

pub mod action;
pub mod api;
pub mod audit;
pub mod backend;
pub mod client;
pub mod engine;
pub mod execute;
pub mod guest_work;
pub mod live_policy;
pub mod paths;
pub mod pool;
pub mod report;
pub mod start_wait;
pub mod store;
pub mod supervisor;

pub use action::{Action, ActionData};
pub use backend::{Backend, BackendError, FakeBackend, Liveness, Started, Stats};
pub use client::{Client, ClientError};
pub use engine::{Engine, EngineError, ReconcileReport, Status};
pub use store::{Record, Store, StoreError};
