//! anypop: anycast game-server protection and forwarding with XDP.
//!
//! One module per concern (see `docs/ARCHITECTURE.md`):
//! - [`config`]: parse and validate the network file.
//! - [`compile`]: the network file → the exact kernel tables of one node, pure and host-tested.
//! - [`dataplane`]: load, pin, attach the kernel programs and fill their maps.
//! - [`telemetry`]: read the per-verdict counters and format them.
//! - [`doctor`]: `anypop doctor`, the pre-deployment checks of a machine.
pub mod bench;
pub mod compile;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod doctor;
pub mod lab;
pub mod sys;
pub mod telemetry;
