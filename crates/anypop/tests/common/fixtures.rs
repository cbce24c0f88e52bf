//! The network files of the tests. Whole networks that read best as one literal file stay under
//! `tests/fixtures/` (each included as text, the services and rules of a test passed to
//! [`lab_network`]); the usual small ones are built with [`anypop::config::sample`], as `anypop
//! bench` and the unit tests build theirs.
#![allow(dead_code)]

pub use anypop::config::sample;

/// The network of the golden-packet and property tests (the lab of [`super::build_lab`]).
pub const GOLDEN_TOML: &str = include_str!("../fixtures/golden.toml");
/// The network of the backend's golden tests (the lab of [`super::backend`]).
pub const BACKEND_TOML: &str = include_str!("../fixtures/backend.toml");

/// `services` (a test's services, rules and profiles, as text) behind pop-1 on `interfaces`,
/// with no new-source cap, be-1 at 198.51.100.21 and then `more` (further nodes).
pub fn pop_with(interfaces: &[&str], services: &str, more: &[sample::Table]) -> String {
    let [pop, be1] = sample::pop1_be1(interfaces);
    format!(
        "{}{services}{}{}",
        sample::no_source_cap(),
        sample::network(&[pop, be1]),
        sample::network(more)
    )
}

/// [`pop_with`] on the lab's a0 and b0 (see [`super::build_lab`]).
pub fn lab_network(services: &str) -> String {
    pop_with(&["a0", "b0"], services, &[])
}

/// The network whose POP `pop-1` runs on interface `ifname` with `xdp_mode = "{mode}"`, serving
/// the UDP game service `g` on 203.0.113.10:27015.
pub fn pop_network(ifname: &str, mode: &str) -> String {
    pop_network_ports(ifname, mode, "27015")
}

/// [`pop_network`] with the game service on `ports` (as written in the file, e.g. `"9-1"`).
pub fn pop_network_ports(ifname: &str, mode: &str, ports: &str) -> String {
    sample::network(&[
        sample::udp_service("g", ports),
        sample::pop("pop-1", &[ifname], sample::TUNNEL).str("xdp_mode", mode),
        sample::backend("be-1", "eth0", sample::BE1),
    ])
}

/// A network whose backend `be-1` runs on interface `ifname` (address 198.51.100.1).
pub fn backend_network(ifname: &str) -> String {
    backend_named_network("be-1", ifname)
}

/// A backend `name` at 198.51.100.1 on `ifname`, serving the UDP game service; the POP "edge"
/// (on x0, which no test makes) exists only because a network needs one.
pub fn backend_named_network(name: &str, ifname: &str) -> String {
    sample::network(&[
        sample::service("g", sample::VIP, "udp")
            .str("ports", "27015")
            .list("backends", &[name]),
        sample::pop("edge", &["x0"], "198.51.100.9"),
        sample::backend(name, ifname, sample::TUNNEL),
    ])
}
