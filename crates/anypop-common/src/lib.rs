//! Types and pure logic shared by anypop's kernel programs and its user space.
//!
//! Everything here is `no_std` so the eBPF programs can use it; the `user` feature adds
//! `aya::Pod` impls and the std-only builders (Maglev tables) that user space needs.
//! Decisions that need no packet access live here so they are unit-tested on the host.
#![no_std]

#[cfg(feature = "user")]
extern crate std;

pub mod gcra;
pub mod hash;
pub mod layout;
#[cfg(feature = "user")]
pub mod maglev;
pub mod verdict;

pub use verdict::Reason;
