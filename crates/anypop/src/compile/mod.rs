//! The network file → the exact contents of the kernel's maps. Pure: no kernel, no I/O, so every
//! table is unit-tested on the host.
//!
//! - [`edge`]: a POP's part of a [`Network`](crate::config::Network) → [`EdgeTables`], the
//!   entries of the edge program's config maps for one generation slot;
//! - [`backend`]: a backend's part → [`BackendTables`];
//! - [`prefix_sets`]: source prefixes with their sets → LPM entries carrying the union of every
//!   covering prefix's sets;
//! - [`names`]: the names behind the kernel's indices, for counters and status.
pub mod backend;
pub mod edge;
pub mod names;
pub mod prefix_sets;

pub use backend::{BackendTables, compile_backend};
pub use edge::{EdgeTables, MaglevInput, compile_edge};
pub use names::Names;
