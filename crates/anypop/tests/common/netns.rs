//! The one namespace builder of the tests: a private network namespace set up step by step, in
//! the calling thread, each step one `ip` or `sysctl` command that must succeed. The namespace
//! (and every interface in it) disappears with the thread, so tests run their set-up in
//! [`in_thread`].
#![allow(dead_code)]

use super::{private_netns, sh};

/// The calling thread's network namespace, being set up.
pub struct Netns(());

impl Netns {
    /// Moves the calling thread into a new, empty network namespace (nothing is up, not even
    /// `lo`).
    pub fn enter() -> Netns {
        private_netns();
        Netns(())
    }

    /// The namespace the calling thread is in already (for steps after the first set-up).
    pub fn current() -> Netns {
        Netns(())
    }

    /// Brings `lo` up.
    pub fn lo_up(self) -> Netns {
        self.up("lo")
    }

    /// Brings interface `dev` up.
    pub fn up(self, dev: &str) -> Netns {
        sh(&["ip", "link", "set", dev, "up"]);
        self
    }

    /// Adds the veth pair `name`/`peer` and brings both ends up.
    pub fn veth(self, name: &str, peer: &str) -> Netns {
        self.veth_down(name, peer).up(name).up(peer)
    }

    /// Adds the veth pair `name`/`peer`, `name` with the MAC address `mac`, both ends up.
    pub fn veth_mac(self, name: &str, mac: &str, peer: &str) -> Netns {
        sh(&[
            "ip", "link", "add", name, "address", mac, "type", "veth", "peer", "name", peer,
        ]);
        self.up(name).up(peer)
    }

    /// Adds the veth pair `name`/`peer` and leaves both ends down.
    pub fn veth_down(self, name: &str, peer: &str) -> Netns {
        sh(&[
            "ip", "link", "add", name, "type", "veth", "peer", "name", peer,
        ]);
        self
    }

    /// Adds the address `cidr` (e.g. `198.51.100.1/24`) to `dev`.
    pub fn addr(self, cidr: &str, dev: &str) -> Netns {
        sh(&["ip", "addr", "add", cidr, "dev", dev]);
        self
    }

    /// A permanent neighbour entry: `ip` has MAC `mac` on `dev`.
    pub fn neigh(self, ip: &str, mac: &str, dev: &str) -> Netns {
        sh(&[
            "ip",
            "neigh",
            "replace",
            ip,
            "lladdr",
            mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ]);
        self
    }

    /// A route to `dst` through the gateway `via`.
    pub fn route(self, dst: &str, via: &str) -> Netns {
        sh(&["ip", "route", "add", dst, "via", via]);
        self
    }

    /// Turns IPv4 forwarding on for each of `confs`, in order: `net.ipv4.conf.<conf>.forwarding`
    /// (`"all"` or an interface; `bpf_fib_lookup` answers only for interfaces with forwarding
    /// on).
    pub fn forwarding(self, confs: &[&str]) -> Netns {
        for c in confs {
            sh(&[
                "sysctl",
                "-q",
                "-w",
                &format!("net.ipv4.conf.{c}.forwarding=1"),
            ]);
        }
        self
    }

    /// The veth pair t0/t1, t0 with 198.51.100.1/24 and forwarding on: where the tests of
    /// `anypop run` put their node (`lo` is not touched).
    pub fn t0_pair(self) -> Netns {
        self.veth("t0", "t1")
            .addr("198.51.100.1/24", "t0")
            .forwarding(&["all", "t0"])
    }
}

/// A new namespace with `lo` up and [`Netns::t0_pair`] in it, for the calling thread.
pub fn t0_netns() {
    Netns::enter().lo_up().t0_pair();
}

/// Runs `f` on a thread of its own (whose private namespace, if `f` makes one, dies with it) and
/// returns what it returns; a panic inside is raised again here.
pub fn in_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f)
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
}
