//! The network file → the exact contents of the kernel's maps. Pure: no kernel, no I/O, so every
//! table is unit-tested on the host.
//!
//! - [`edge`]: a POP's part of a [`Network`](crate::config::Network) → [`EdgeTables`], the
//!   entries the file gives the edge program's config maps for one generation slot;
//! - [`image`]: [`EdgeTables`] → [`EdgeImage`], everything the slot's maps will hold for the
//!   loaded program's sizes: the expanded set table, the trie keys, the DIR-24-8 table and the
//!   decisions ([`source`]), the placed IPv4 service table ([`svc4`]), the Maglev tables;
//! - [`prefix_sets`]: source prefixes with their sets → LPM entries carrying the union of every
//!   covering prefix's sets;
//! - [`backend`]: a backend's part → [`BackendTables`];
//! - [`names`]: the names behind the kernel's indices, for counters and status.
pub mod backend;
pub mod edge;
pub mod image;
pub mod names;
pub mod prefix_sets;
pub mod source;
pub mod svc4;

pub use backend::{BackendTables, compile_backend};
pub use edge::{EdgeTables, MaglevInput, compile_edge};
pub use image::{EdgeImage, ImageError, LpmKey, MaglevTable};
pub use names::Names;
