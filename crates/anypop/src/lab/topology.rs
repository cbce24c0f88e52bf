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
    process::{Child, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use super::netns::{Netns, owned_by_dead_process, remove_leftovers, veth};
use crate::{dataplane::baseline::Baseline, telemetry::Snapshot};

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

/// One `anypop run` child process.
struct Daemon {
    node: String,
    child: Child,
    log: PathBuf,
}

/// How an interface runs XDP, as the kernel reports it.
#[derive(Clone, Debug, Default)]
pub struct XdpInfo {
    /// "native", "generic" or "none".
    pub mode: String,
    pub prog_id: u32,
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

    /// Links, addresses, routes and sysctls.
    fn wire(&mut self) -> anyhow::Result<()> {
        let t = self.topology;
        veth(&self.players, "p0", &self.router, "r-p")?;
        let mut plan: Vec<(&Netns, String)> = vec![
            (&self.players, "ip addr add 100.64.0.2/24 dev p0".into()),
            (&self.players, "ip route add default via 100.64.0.1".into()),
            (&self.router, "ip addr add 100.64.0.1/24 dev r-p".into()),
            (
                &self.router,
                "sysctl -q -w net.ipv4.conf.all.forwarding=1".into(),
            ),
            (
                &self.router,
                "sysctl -q -w net.ipv4.conf.all.rp_filter=0".into(),
            ),
            // ECMP by the 5-tuple: players spread over the POPs as they do on the internet.
            (
                &self.router,
                "sysctl -q -w net.ipv4.fib_multipath_hash_policy=1".into(),
            ),
        ];
        for i in 0..MAX_PLAYERS {
            plan.push((
                &self.players,
                format!("ip addr add {}/24 dev p0", player_addr(i)),
            ));
        }
        for i in 1..=t.pops {
            let pop = &self.pops[i - 1];
            veth(&self.router, &format!("r-p{i}"), pop, &format!("pop{i}-in"))?;
            veth(
                &self.attacker,
                &format!("at{i}"),
                pop,
                &format!("pop{i}-tr"),
            )?;
            plan.extend([
                (
                    &self.router,
                    format!("ip addr add 10.0.{i}.1/24 dev r-p{i}"),
                ),
                (pop, format!("ip addr add 10.0.{i}.2/24 dev pop{i}-in")),
                (pop, format!("ip addr add 10.2.{i}.2/24 dev pop{i}-tr")),
                (pop, format!("ip route add default via 10.0.{i}.1")),
                (pop, "sysctl -q -w net.ipv4.conf.all.forwarding=1".into()),
                (
                    pop,
                    format!("sysctl -q -w net.ipv4.conf.pop{i}-in.forwarding=1"),
                ),
                (
                    pop,
                    format!("sysctl -q -w net.ipv4.conf.pop{i}-tr.forwarding=1"),
                ),
                (
                    &self.attacker,
                    format!("ip addr add 10.2.{i}.1/24 dev at{i}"),
                ),
            ]);
        }
        for j in 1..=t.backends {
            let be = &self.backends[j - 1];
            veth(&self.router, &format!("r-b{j}"), be, &format!("be{j}-in"))?;
            plan.extend([
                (
                    &self.router,
                    format!("ip addr add 10.1.{j}.1/24 dev r-b{j}"),
                ),
                (be, format!("ip addr add 10.1.{j}.2/24 dev be{j}-in")),
                (be, format!("ip route add default via 10.1.{j}.1")),
                (be, "sysctl -q -w net.ipv4.conf.all.forwarding=1".into()),
                (
                    be,
                    format!("sysctl -q -w net.ipv4.conf.be{j}-in.forwarding=1"),
                ),
                (be, "sysctl -q -w net.ipv4.conf.all.rp_filter=0".into()),
                (
                    be,
                    format!("sysctl -q -w net.ipv4.conf.be{j}-in.rp_filter=0"),
                ),
            ]);
        }
        // Every router interface: no reverse-path filter (replies from the VIP arrive from the
        // backends, while the route to the VIP points at the POPs).
        let router_ifs: Vec<String> = std::iter::once("r-p".to_string())
            .chain((1..=t.pops).map(|i| format!("r-p{i}")))
            .chain((1..=t.backends).map(|j| format!("r-b{j}")))
            .collect();
        for ifname in &router_ifs {
            plan.push((
                &self.router,
                format!("sysctl -q -w net.ipv4.conf.{ifname}.rp_filter=0"),
            ));
        }
        // veth leaves TX checksums to hardware that does not exist; once XDP rewrites a frame
        // nobody completes them. Real NICs put complete checksums on the wire, so we do too.
        plan.push((&self.players, "ethtool -K p0 tx off".into()));
        for ifname in &router_ifs {
            plan.push((&self.router, format!("ethtool -K {ifname} tx off")));
        }
        for i in 1..=t.pops {
            plan.push((&self.pops[i - 1], format!("ethtool -K pop{i}-in tx off")));
        }
        for j in 1..=t.backends {
            plan.push((&self.backends[j - 1], format!("ethtool -K be{j}-in tx off")));
        }
        for (ns, cmd) in plan {
            ns.exec(&cmd.split_whitespace().collect::<Vec<_>>())?;
        }
        self.route_via(&(1..=t.pops).collect::<Vec<_>>())?;
        let pops = t.pops;
        self.router_xdp = Some(self.router.run(move || -> anyhow::Result<Baseline> {
            let mut b = Baseline::load()?;
            for i in 1..=pops {
                b.attach("base_pass", &format!("r-p{i}"))?;
            }
            Ok(b)
        })??);
        Ok(())
    }

    /// Points the router's route to the VIP at these POPs (1-based), equal cost: `[1, 2]` is the
    /// normal anycast, `[2]` is POP 1 withdrawn (a route flap moves its players to POP 2).
    pub fn route_via(&self, pops: &[usize]) -> anyhow::Result<()> {
        if pops.is_empty() || pops.iter().any(|&i| i == 0 || i > self.topology.pops) {
            bail!("route_via: POPs are numbered 1..={}", self.topology.pops);
        }
        let mut cmd: Vec<String> = ["ip", "route", "replace", &format!("{VIP}/32")]
            .map(String::from)
            .to_vec();
        if pops.len() == 1 {
            let i = pops[0];
            cmd.extend(
                ["via", &format!("10.0.{i}.2"), "dev", &format!("r-p{i}")].map(String::from),
            );
        } else {
            for &i in pops {
                cmd.extend(
                    [
                        "nexthop",
                        "via",
                        &format!("10.0.{i}.2"),
                        "dev",
                        &format!("r-p{i}"),
                    ]
                    .map(String::from),
                );
            }
        }
        let refs: Vec<&str> = cmd.iter().map(String::as_str).collect();
        self.router.exec(&refs)?;
        Ok(())
    }

    fn start_daemon(&mut self, node: &str, backend: bool) -> anyhow::Result<()> {
        let ns = if backend {
            &self.backends[node[3..].parse::<usize>()? - 1]
        } else {
            &self.pops[node[4..].parse::<usize>()? - 1]
        };
        let log = self.dir.join(format!("{node}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = ns
            .command(&self.binary)?
            .args(["run", "--config"])
            .arg(&self.network_path)
            .args(["--node", node, "--pin-root"])
            .arg(&self.pin_root)
            .args(["--interval", "5", "--metrics", "off"])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {} run", self.binary.display()))?;
        self.daemons.push(Daemon {
            node: node.to_owned(),
            child,
            log,
        });
        Ok(())
    }

    /// Waits until every daemon has attached its programs (and backends have their VIP on lo);
    /// a daemon that exits instead fails the build with its log.
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            for d in &mut self.daemons {
                if let Some(status) = d.child.try_wait()? {
                    bail!(
                        "anypop run --node {} exited ({status}) while the lab started:\n{}",
                        d.node,
                        tail(&d.log, 20)
                    );
                }
            }
            // Each daemon says so once its programs are attached (and a backend's VIPs are on
            // lo): the same signal a service manager waits for.
            let all_ready = self.daemons.iter().all(|d| {
                std::fs::read_to_string(&d.log)
                    .is_ok_and(|l| l.contains(&format!("ready: node {} serving", d.node)))
            });
            if all_ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .daemons
                    .iter()
                    .map(|d| format!("--- {}\n{}", d.node, tail(&d.log, 10)))
                    .collect();
                bail!(
                    "the lab's daemons did not attach within 90 s:\n{}",
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
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

    /// How `ifname` of POP `i` (1-based) runs XDP.
    pub fn xdp_of_pop(&self, i: usize, ifname: &str) -> XdpInfo {
        xdp_info(&self.pops[i - 1], ifname)
    }

    /// The pin directory of a node's daemon.
    pub fn pin_dir(&self, node: &str) -> PathBuf {
        crate::dataplane::node_pin_dir(&self.pin_root, node)
    }

    /// Verdict counters of a node (POP or backend), from its pins.
    pub fn verdicts(&self, node: &str) -> anyhow::Result<Snapshot> {
        crate::telemetry::status::pinned_verdicts(&self.pin_dir(node))
    }

    /// Applies a new network file to every running daemon with `anypop apply` (validated first,
    /// switched live); fails with the first daemon's refusal.
    pub fn apply(&self, network: &str) -> anyhow::Result<()> {
        let all: Vec<String> = self.daemons.iter().map(|d| d.node.clone()).collect();
        self.apply_to(&all, network)
    }

    /// [`Lab::apply`] for some nodes only.
    pub fn apply_to(&self, nodes: &[String], network: &str) -> anyhow::Result<()> {
        let path = self.dir.join("network-new.toml");
        std::fs::write(&path, network)?;
        for d in self.daemons.iter().filter(|d| nodes.contains(&d.node)) {
            let out = std::process::Command::new(&self.binary)
                .args(["apply", "--config"])
                .arg(&path)
                .args(["--node", &d.node, "--pin-root"])
                .arg(&self.pin_root)
                .output()?;
            if !out.status.success() {
                bail!(
                    "anypop apply --node {} failed: {}",
                    d.node,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        std::fs::copy(&path, &self.network_path)?;
        Ok(())
    }

    /// Interface index of `ifname` in `ns`.
    pub fn ifindex(ns: &Netns, ifname: &str) -> anyhow::Result<u32> {
        let name = ifname.to_owned();
        ns.run(move || crate::sys::iface::ifindex(&name, "lab"))?
    }

    /// The MAC address of `ifname` in `ns`.
    pub fn mac(ns: &Netns, ifname: &str) -> anyhow::Result<[u8; 6]> {
        let name = ifname.to_owned();
        ns.run(move || crate::sys::iface::mac_of(&name))?
    }

    /// Frames the kernel dropped on `ifname` in `ns` (rx + tx, `ip -s`): a veth whose peer could
    /// not keep up with the generator.
    pub fn drops(ns: &Netns, ifname: &str) -> u64 {
        let Ok(out) = ns.exec(&["ip", "-s", "-j", "link", "show", ifname]) else {
            return 0;
        };
        out.match_indices("\"dropped\":")
            .filter_map(|(i, m)| {
                out[i + m.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit())
                    .collect::<String>()
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }

    /// Every drop and error counter of every link in the lab's transit namespaces (router, POPs,
    /// backends), by `node/ifname/counter`: the kernel's `ip -s` rx/tx dropped and veth's own
    /// per-queue drop and XDP error counters, each node's IP-layer discards, and the machine's
    /// input-backlog drops. A loss between two of our programs shows here as the place where it
    /// happened.
    pub fn transit_drop_counters(&self) -> std::collections::BTreeMap<String, u64> {
        let mut out = std::collections::BTreeMap::new();
        // The CPUs' input backlogs (a veth without NAPI hands frames to its peer through them):
        // one per CPU for the whole machine, not per namespace. Its second column counts frames
        // dropped because the backlog was full.
        if let Ok(softnet) = std::fs::read_to_string("/proc/net/softnet_stat") {
            let dropped: u64 = softnet
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter_map(|v| u64::from_str_radix(v, 16).ok())
                .sum();
            out.insert("machine/softnet/backlog_dropped".to_owned(), dropped);
        }
        let nodes = std::iter::once(&self.router)
            .chain(self.pops.iter())
            .chain(self.backends.iter());
        for ns in nodes {
            // The node's IP layer: frames its kernel found malformed, routed nowhere or discarded.
            if let Ok(snmp) = ns.exec(&["cat", "/proc/net/snmp"]) {
                let mut ip = snmp.lines().filter(|l| l.starts_with("Ip:"));
                if let (Some(names), Some(values)) = (ip.next(), ip.next()) {
                    for (k, v) in names.split_whitespace().zip(values.split_whitespace()) {
                        if matches!(
                            k,
                            "InHdrErrors"
                                | "InAddrErrors"
                                | "InDiscards"
                                | "OutDiscards"
                                | "OutNoRoutes"
                        ) && let Ok(n) = v.parse::<u64>()
                        {
                            out.insert(format!("{}/ip/{k}", ns.name), n);
                        }
                    }
                }
            }
            let Ok(links) = ns.exec(&["ip", "-s", "-j", "link", "show"]) else {
                continue;
            };
            let Ok(links) = serde_json::from_str::<Vec<serde_json::Value>>(&links) else {
                continue;
            };
            for link in links {
                let Some(name) = link["ifname"].as_str() else {
                    continue;
                };
                if name == "lo" {
                    continue;
                }
                for dir in ["rx", "tx"] {
                    if let Some(n) = link["stats64"][dir]["dropped"].as_u64() {
                        out.insert(format!("{}/{name}/{dir}_dropped", ns.name), n);
                    }
                }
                let Ok(stats) = ns.exec(&["ethtool", "-S", name]) else {
                    continue;
                };
                for line in stats.lines() {
                    let Some((key, value)) = line.trim().split_once(':') else {
                        continue;
                    };
                    if !(key.ends_with("drops") || key.ends_with("errors")) {
                        continue;
                    }
                    if let Ok(n) = value.trim().parse::<u64>() {
                        out.insert(format!("{}/{name}/{key}", ns.name), n);
                    }
                }
            }
        }
        out
    }

    /// The last lines of a node's daemon log.
    pub fn log_tail(&self, node: &str, lines: usize) -> String {
        self.daemons
            .iter()
            .find(|d| d.node == node)
            .map(|d| tail(&d.log, lines))
            .unwrap_or_default()
    }

    /// Stops a node's daemon (it leaves its data plane running, pinned) and starts a new one,
    /// which adopts the running programs by replacing them in place: a restart or an upgrade.
    /// Returns once the new daemon has taken over every attachment.
    pub fn restart_daemon(&mut self, node: &str) -> anyhow::Result<()> {
        let pos = self
            .daemons
            .iter()
            .position(|d| d.node == node)
            .with_context(|| format!("no daemon runs {node}"))?;
        let mut d = self.daemons.remove(pos);
        let adopted_before = tail(&d.log, 100_000).matches("adopted the running").count();
        unsafe { libc::kill(d.child.id() as i32, libc::SIGTERM) };
        let status = d.child.wait()?;
        if !status.success() {
            bail!(
                "{node}'s daemon failed on stop ({status}):\n{}",
                tail(&d.log, 20)
            );
        }
        let backend = node.starts_with("be-");
        self.start_daemon(node, backend)?;
        let want = adopted_before + 2; // POP: two interfaces; backend: decap and dsr
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let d = self.daemons.last_mut().expect("just started");
            if let Some(status) = d.child.try_wait()? {
                bail!(
                    "{node}'s new daemon exited ({status}):\n{}",
                    tail(&d.log, 20)
                );
            }
            if tail(&d.log, 100_000).matches("adopted the running").count() >= want {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{node}'s new daemon did not adopt its data plane:\n{}",
                    tail(&d.log, 20)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops every daemon (SIGTERM, then SIGKILL after 10 s); they leave their programs pinned,
    /// which go with the pins and namespaces the lab removes next.
    fn stop_daemons(&mut self) {
        for d in &self.daemons {
            unsafe { libc::kill(d.child.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for d in &mut self.daemons {
            loop {
                match d.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = d.child.kill();
                        let _ = d.child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
            let _ = std::fs::remove_dir_all(crate::sys::rundir::run_dir(
                &crate::dataplane::node_pin_dir(&self.pin_root, &d.node),
            ));
        }
        self.daemons.clear();
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

/// XDP mode and program of an interface in `ns`.
fn xdp_info(ns: &Netns, ifname: &str) -> XdpInfo {
    let name = ifname.to_owned();
    let seen = ns
        .run(move || crate::dataplane::links::seen_xdp(&name))
        .ok()
        .flatten();
    match seen {
        None => XdpInfo {
            mode: "none".into(),
            prog_id: 0,
        },
        Some(x) => XdpInfo {
            mode: x.mode().to_string(),
            prog_id: x.prog_id.unwrap_or(0),
        },
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}
