//! Network-namespace topologies for the demo, the tests and the benchmarks.
pub mod demo;
pub mod netns;
