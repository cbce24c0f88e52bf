//! An anycast network in network namespaces, built from a small [`Topology`], with every node
//! running the real `anypop run` for its role from one network file — and always removed again.
//!
//! ```text
//!                    ┌──────── r-p1 ═══ pop1-in  POP 1 (edge) ─ pop1-tr ═══ at1 ─┐
//!  players ══ r-p   router (ECMP for the VIP)                                   attacker
//!  100.64.0.x       └──────── r-p2 ═══ pop2-in  POP 2 (edge) ─ pop2-tr ═══ at2 ─┘ (generator)
//!                   r-b1 ═══ be1-in  backend 1 (decap + dsr, game server on the VIP)
//!                   r-b2 ═══ be2-in  backend 2
//! ```
//! The router reaches the VIP over equal-cost routes through every POP: that is our anycast, and
//! [`Lab::route_via`] moves it (a route flap). POP i owns 10.0.i.2 (its tunnel source), backend j
//! owns 10.1.j.2; players live in 100.64.0.0/24. The attacker's flood enters each POP over its own
//! transit link (`pop{i}-tr`), as the internet delivers a flood: the router's kernel could not
//! forward a flood at line rate on two cores, and our POPs must take it, not the router.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context, bail};

mod counters;
mod daemons;
mod wire;

pub use counters::XdpInfo;

use super::netns::{Netns, owned_by_dead_process, remove_leftovers};
use crate::dataplane::baseline::Baseline;
use daemons::Daemon;

/// The anycast address every POP announces.
pub const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// The UDP game port.
pub const GAME_PORT: u16 = 27015;
/// The TCP service (login / RCON) port.
pub const TCP_PORT: u16 = 27016;
/// The attacker's range: a blocklist rule denies it.
pub const ATTACK_RANGE: &str = "198.18.0.0/15";

/// Player addresses the players' namespace holds ([`player_addr`]).
pub const MAX_PLAYERS: usize = 32;

/// The size of the lab.
#[derive(Clone, Copy, Debug)]
pub struct Topology {
    /// POPs announcing the VIP (1–8).
    pub pops: usize,
    /// Backends running game servers (1–8).
    pub backends: usize,
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            pops: 2,
            backends: 2,
        }
    }
}

/// The address of player `i` (0-based).
pub fn player_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(100, 64, 0, 10 + (i % MAX_PLAYERS) as u8)
}

/// The network file of a topology: the game (UDP, per-source limit), the TCP service, a
/// blocklist for the attacker's range, one node per POP and backend.
pub fn network_file(t: &Topology) -> String {
    let backends: Vec<String> = (1..=t.backends).map(|j| format!("\"be-{j}\"")).collect();
    let mut s = format!(
        r#"# The lab's network: written by `anypop lab`, the same file for every node.
[defaults]
xdp_mode = "auto"

[[service]]
name = "game"
vip = "{VIP}"
protocol = "udp"
ports = "{GAME_PORT}"
backends = [{b}]
limit = {{ pps = 200, burst = 1.0, block = "3s" }}

[[service]]
name = "login"
vip = "{VIP}"
protocol = "tcp"
ports = "{TCP_PORT}"
backends = [{b}]

[[rule]]
name = "blocklist"
action = "deny"
src = ["{ATTACK_RANGE}"]
"#,
        b = backends.join(", ")
    );
    for i in 1..=t.pops {
        s += &format!(
            "\n[[node]]\nname = \"pop-{i}\"\nrole = \"pop\"\ninterfaces = [\"pop{i}-in\", \"pop{i}-tr\"]\ntunnel_source = \"10.0.{i}.2\"\n"
        );
    }
    for j in 1..=t.backends {
        s += &format!(
            "\n[[node]]\nname = \"be-{j}\"\nrole = \"backend\"\ninterface = \"be{j}-in\"\naddress = \"10.1.{j}.2\"\n"
        );
    }
    s
}

static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

/// A running lab. Dropping it stops the daemons and removes namespaces, pins and files.
pub struct Lab {
    pub topology: Topology,
    daemons: Vec<Daemon>,
    /// Lets the router's veths accept the POPs' XDP_TX frames (veth needs a program on the
    /// receiving side).
    router_xdp: Option<Baseline>,
    pub players: Netns,
    pub attacker: Netns,
    pub router: Netns,
    pub pops: Vec<Netns>,
    pub backends: Vec<Netns>,
    /// The network file every node runs.
    pub network_path: PathBuf,
    pub pin_root: PathBuf,
    pub dir: PathBuf,
    binary: PathBuf,
}

impl Lab {
    /// Builds the namespaces and links of `t`, writes the network file and starts `binary run` for
    /// every node; returns once every data plane is attached. `progress` hears each step.
    pub fn build(t: Topology, binary: &Path, progress: &dyn Fn(&str)) -> anyhow::Result<Lab> {
        if !(1..=8).contains(&t.pops) || !(1..=8).contains(&t.backends) {
            bail!("a lab has 1 to 8 POPs and 1 to 8 backends");
        }
        if !binary.exists() {
            bail!(
                "the anypop binary {} does not exist; build it with cargo build --release",
                binary.display()
            );
        }
        remove_leftovers();
        remove_lab_leftovers();
        let tag = format!(
            "{}-{}",
            std::process::id(),
            LAB_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(format!("anypop-lab-{tag}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        progress("creating namespaces: players, attacker, router, POPs, backends");
        let mut lab = Lab {
            topology: t,
            daemons: Vec::new(),
            router_xdp: None,
            players: Netns::new("players")?,
            attacker: Netns::new("attacker")?,
            router: Netns::new("router")?,
            pops: (1..=t.pops)
                .map(|i| Netns::new(&format!("pop{i}")))
                .collect::<anyhow::Result<_>>()?,
            backends: (1..=t.backends)
                .map(|j| Netns::new(&format!("be{j}")))
                .collect::<anyhow::Result<_>>()?,
            network_path: dir.join("network.toml"),
            pin_root: PathBuf::from(format!("/sys/fs/bpf/anypop-lab-{tag}")),
            dir,
            binary: binary.to_owned(),
        };
        lab.wire()?;
        std::fs::write(&lab.network_path, network_file(&t))?;
        progress("starting `anypop run` on every backend and POP");
        for j in 1..=t.backends {
            lab.start_daemon(&format!("be-{j}"), true)?;
        }
        for i in 1..=t.pops {
            lab.start_daemon(&format!("pop-{i}"), false)?;
        }
        lab.wait_ready()?;
        Ok(lab)
    }

    /// What is where, for someone exploring the lab by hand.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "network file: {}\npins:         {}\nVIP:          {VIP} (udp {GAME_PORT} game, tcp {TCP_PORT} login)\nnamespaces:   players {} (100.64.0.2, players {}..{})\n              attacker {}\n              router {}\n",
            self.network_path.display(),
            self.pin_root.display(),
            self.players.name,
            player_addr(0),
            player_addr(MAX_PLAYERS - 1),
            self.attacker.name,
            self.router.name,
        );
        for (i, ns) in self.pops.iter().enumerate() {
            s += &format!(
                "              pop-{} {} (log {})\n",
                i + 1,
                ns.name,
                self.dir.join(format!("pop-{}.log", i + 1)).display()
            );
        }
        for (j, ns) in self.backends.iter().enumerate() {
            s += &format!(
                "              be-{} {} (log {})\n",
                j + 1,
                ns.name,
                self.dir.join(format!("be-{}.log", j + 1)).display()
            );
        }
        s += &format!(
            "try:          ip netns exec {} ip route show {VIP}     (the anycast routes)\n              anypop status --pin-root {} --node pop-1",
            self.router.name,
            self.pin_root.display()
        );
        s
    }

    /// The pin directory of a node's daemon.
    pub fn pin_dir(&self, node: &str) -> PathBuf {
        crate::dataplane::node_pin_dir(&self.pin_root, node)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_daemons();
        self.router_xdp = None;
        let _ = std::fs::remove_dir_all(&self.pin_root);
        let _ = std::fs::remove_dir_all(&self.dir);
        // The namespaces delete themselves as the fields drop.
    }
}

/// Removes pins, lock directories and files of labs whose process died without cleaning up
/// (killed with SIGKILL, say); their namespaces go with [`remove_leftovers`].
fn remove_lab_leftovers() {
    for (dir, prefix) in [
        (PathBuf::from("/sys/fs/bpf"), "anypop-lab-"),
        (std::env::temp_dir(), "anypop-lab-"),
        (PathBuf::from("/run/anypop"), "sys_fs_bpf_anypop-lab-"),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if owned_by_dead_process(&e.file_name().to_string_lossy(), prefix) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}
