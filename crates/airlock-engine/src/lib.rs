//! airlock-engine: orchestration of named sandboxes. The engine is the only code that changes
//! sandboxes and the only writer of the state store ([`store`]).

pub mod store;

pub use store::{Record, Store, StoreError};
