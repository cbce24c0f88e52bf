//! Network-namespace topologies for the demo, the tests and the benchmarks.
//! - [`frames`]: the frames tests and benchmarks send (etherparse), one checksum helper.
//! - [`netns`]: namespaces entered with `setns`, always deleted.
//! - [`topology`]: the anycast lab (players, attacker, router, POPs, backends) running the real
//!   daemons from one network file.
//! - [`game`]: the lab's game server and game clients (loss, RTT, which backend answered).
//! - [`traffic`]: players, game servers and the attacker's flood, as handles.
//! - [`demo`]: `anypop lab demo`.
//! - [`loadtest`]: `anypop lab load-test`, players' loss and RTT without and with a flood.
pub mod demo;
pub mod frames;
pub mod game;
pub mod loadtest;
pub mod netns;
pub mod topology;
pub mod traffic;
