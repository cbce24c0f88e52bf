//! `anypop bench`: ns per packet of the real programs through BPF_PROG_TEST_RUN, each path beside
//! its baselines measured in the same run on the same machine: an empty XDP program, a bare
//! XDP_DROP, and Debian's `xdp-filter` with an equivalent rule.
//!
//! Two methods, because XDP test runs do not reset the frame between repetitions:
//! - `repeat`: one syscall runs the program N times on the same frame; the kernel reports the
//!   mean. Exact for paths that leave the frame alone (drops, passes).
//! - `single`: N syscalls of one run each, mean of the kernel's per-run time. Includes the
//!   kernel's timer overhead (the empty program shows it), but is the only honest way to time the
//!   forward path, which rewrites the frame.
use std::{
    fmt::Write as _,
    os::fd::{AsFd, AsRawFd},
    process::Command,
    time::Instant,
};

use anyhow::{Context, anyhow, bail};

pub mod throughput;

use crate::{
    compile, config,
    dataplane::{
        backend::BackendPlane,
        baseline::Baseline,
        edge::{Edge, EdgeSizes},
        testrun::{run_tc_raw_fd, run_xdp_raw_fd},
    },
    lab::netns::{Netns, run_cmd},
};
use anypop_common::verdict::Reason;

/// One measured path.
#[derive(Clone, Debug)]
pub struct Row {
    pub program: String,
    pub path: String,
    /// A TC program (actions numbered differently from XDP's).
    pub tc: bool,
    pub action: u32,
    /// ns/packet by the `repeat` method (None where it cannot apply).
    pub repeat_ns: Option<f64>,
    /// ns/packet by the `single` method.
    pub single_ns: f64,
}

/// The benchmark's network: a blocklist of `prefixes` prefixes (plus the attacker's range), a
/// forwarded service and a rate-limited one.
fn network(prefix_file: &str) -> String {
    format!(
        r#"
[defaults]
new_source_cap = 0

[[service]]
name = "game"
vip = "203.0.113.10"
protocol = "udp"
ports = "27015"
backends = ["be-1"]

[[service]]
name = "limited"
vip = "203.0.113.10"
protocol = "udp"
ports = "27016"
backends = ["be-1"]
limit = {{ pps = 1, burst = 1.0 }}

[[rule]]
name = "blocklist"
action = "deny"
src = ["198.18.0.0/15"]
src_file = "{prefix_file}"

[[node]]
name = "pop-1"
role = "pop"
interfaces = ["a0"]
tunnel_source = "198.51.100.1"

[[node]]
name = "be-1"
role = "backend"
interface = "eth0"
address = "198.51.100.21"
"#
    )
}

fn udp4(src: [u8; 4], dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0x0a, 0, 0x02, 0, 0, 0, 0, 0x99, 0x08, 0x00]);
    let payload = b"benchmark payload 0123456789";
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let c = ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// The internet checksum of an IPv4 header whose checksum field is zero.
fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in header.chunks(2) {
        sum += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The backend side of the benchmark: be-1 at a0's address, one POP.
const BACKEND_NETWORK: &str = r#"
[[service]]
name = "game"
vip = "203.0.113.10"
protocol = "udp"
ports = "27015"
backends = ["be-1"]

[[node]]
name = "pop-1"
role = "pop"
interfaces = ["eth0"]
tunnel_source = "198.51.100.50"

[[node]]
name = "be-1"
role = "backend"
interface = "a0"
address = "198.51.100.1"
"#;

/// Wraps the IP packet of an Ethernet frame in IPIP.
fn ipip(frame: &[u8], src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let inner = &frame[14..];
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + inner.len()) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 4;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let c = ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut v = frame[..14].to_vec();
    v.extend_from_slice(&ip);
    v.extend_from_slice(inner);
    v
}

/// Pseudo-random /24s (deterministic) outside the ranges the frames use.
fn write_prefixes(path: &std::path::Path, n: usize) -> anyhow::Result<()> {
    let mut s = String::with_capacity(n * 16);
    let mut x: u32 = 0x1234_5678;
    let mut written = 0;
    while written < n {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let a = (x >> 24) as u8;
        if matches!(a, 0 | 10 | 100 | 127 | 198 | 203 | 224..=255) {
            continue;
        }
        let _ = writeln!(s, "{}.{}.{}.0/24", a, (x >> 16) as u8, (x >> 8) as u8);
        written += 1;
    }
    std::fs::write(path, s).with_context(|| format!("writing {}", path.display()))
}

/// One program on one frame, measured in rounds.
struct Case {
    program: String,
    path: String,
    fd: i32,
    frame: Vec<u8>,
    /// Leaves the frame unchanged, so `repeat` timing applies.
    stateless: bool,
    /// A TC program (run with an `__sk_buff` context) rather than XDP.
    tc: bool,
    action: u32,
    repeat_min: f64,
    single_total: u64,
    single_n: u64,
}

impl Case {
    fn tc(mut self) -> Case {
        self.tc = true;
        self
    }

    /// One test run of this case.
    fn run(&self, ifindex: u32, repeat: u32) -> anyhow::Result<(u32, u64)> {
        Ok(if self.tc {
            run_tc_raw_fd(self.fd, &self.frame, ifindex, repeat)?
        } else {
            run_xdp_raw_fd(self.fd, &self.frame, Some(ifindex), repeat)?
        })
    }

    fn new(program: &str, path: &str, fd: i32, frame: &[u8], stateless: bool) -> Case {
        Case {
            program: program.into(),
            path: path.into(),
            fd,
            frame: frame.to_vec(),
            stateless,
            tc: false,
            action: 0,
            repeat_min: f64::MAX,
            single_total: 0,
            single_n: 0,
        }
    }
}

/// be-1 of `network` loaded and filled, pinned under a directory of its own (`name`) that
/// `guards` removes however the run ends.
fn backend_plane(
    network: &str,
    name: &str,
    guards: &mut Vec<PinGuard>,
) -> anyhow::Result<BackendPlane> {
    let net = config::parse(network, "bench.toml", std::path::Path::new("."))?;
    let pins = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/anypop-bench-{}-{name}",
        std::process::id()
    ));
    guards.push(PinGuard(pins.clone()));
    let mut plane = BackendPlane::load(&pins)?;
    plane.apply(&compile::compile_backend(&net, "be-1")?)?;
    Ok(plane)
}

/// Removes a benchmark pin directory however the run ends.
struct PinGuard(std::path::PathBuf);

impl Drop for PinGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The xdp-filter peer: loaded on the namespace's veth with a deny rule for one source address.
/// Its program is found by name and run through BPF_PROG_TEST_RUN like ours.
fn xdp_filter_prog(ns: &Netns) -> anyhow::Result<aya::programs::ProgramFd> {
    if Command::new("xdp-filter").arg("--help").output().is_err() {
        bail!("xdp-filter is not installed (Debian package xdp-tools); run scripts/setup.sh");
    }
    // xdp-filter keeps its state under /sys/fs/bpf; `ip netns exec` gives it a private mount
    // namespace where a fresh bpffs is mounted, so nothing leaks into the host's bpffs.
    let script = "mount -t bpf bpf /sys/fs/bpf && xdp-filter load -m native -f ipv4 a1 && xdp-filter ip 198.18.7.7 -m src";
    run_cmd(&["ip", "netns", "exec", &ns.name, "sh", "-c", script])?;
    let mut best: Option<aya::programs::ProgramInfo> = None;
    for p in aya::programs::loaded_programs() {
        let p = p.context("listing programs")?;
        if p.name_as_str() == Some("xdpfilt_alw_ip")
            && best.as_ref().is_none_or(|b| b.id() < p.id())
        {
            best = Some(p);
        }
    }
    let info = best.ok_or_else(|| {
        anyhow!("xdp-filter loaded, but its program xdpfilt_alw_ip was not found")
    })?;
    info.fd()
        .map_err(|e| anyhow!("opening xdp-filter's program: {e}"))
}

/// Runs the whole benchmark and returns its rows; `prefix_counts` are the blocklist sizes for the
/// flatness check.
pub fn run(iterations: u32, repeat: u32, prefix_counts: &[usize]) -> anyhow::Result<Vec<Row>> {
    crate::lab::netns::remove_leftovers();
    let ns = Netns::new("bench")?;
    ns.exec(&[
        "ip", "link", "add", "a0", "type", "veth", "peer", "name", "a1",
    ])?;
    ns.exec(&["ip", "link", "set", "a0", "up"])?;
    ns.exec(&["ip", "link", "set", "a1", "up"])?;
    ns.exec(&["ip", "addr", "add", "198.51.100.1/24", "dev", "a0"])?;
    ns.exec(&[
        "ip",
        "neigh",
        "replace",
        "198.51.100.21",
        "lladdr",
        "02:00:00:00:00:21",
        "dev",
        "a0",
        "nud",
        "permanent",
    ])?;
    ns.exec(&["sysctl", "-q", "-w", "net.ipv4.conf.all.forwarding=1"])?;
    ns.exec(&["sysctl", "-q", "-w", "net.ipv4.conf.a0.forwarding=1"])?;
    ns.exec(&["ip", "addr", "add", "203.0.113.10/32", "dev", "lo"])?;
    ns.exec(&[
        "ip",
        "route",
        "add",
        "100.64.0.0/10",
        "via",
        "198.51.100.21",
    ])?;
    let xf = xdp_filter_prog(&ns)?;
    let xf_fd = xf.as_fd().as_raw_fd();
    let counts = prefix_counts.to_vec();
    let rows = ns.run(move || -> anyhow::Result<Vec<Row>> {
        let a0 = crate::sys::iface::ifindex("a0", "bench")?;
        let mac = crate::sys::iface::mac_of("a0")?;
        let flood = udp4([198, 18, 7, 7], [203, 0, 113, 10], 27015);
        let player = udp4([100, 64, 1, 2], [203, 0, 113, 10], 27015);
        let limited = udp4([100, 100, 0, 1], [203, 0, 113, 10], 27016);
        let other = udp4([100, 64, 1, 2], [198, 51, 100, 1], 22);

        // Every program stays loaded for the whole run, so the measurements can be interleaved:
        // on a shared VM the noise then falls on all of them alike.
        let base = Baseline::load()?;
        let fd_of =
            |p: &aya::programs::Xdp| -> anyhow::Result<i32> { Ok(p.fd()?.as_fd().as_raw_fd()) };
        let fd_of_tc = |p: &aya::programs::SchedClassifier| -> anyhow::Result<i32> {
            Ok(p.fd()?.as_fd().as_raw_fd())
        };
        let mut cases: Vec<Case> = vec![
            Case::new(
                "empty XDP program",
                "any frame",
                fd_of(base.program("base_pass"))?,
                &flood,
                true,
            ),
            Case::new(
                "bare XDP_DROP",
                "any frame",
                fd_of(base.program("base_drop"))?,
                &flood,
                true,
            ),
            Case::new(
                "xdp-filter 1.3.1",
                "drop: source on deny rule (1 address)",
                xf_fd,
                &flood,
                true,
            ),
            Case::new(
                "xdp-filter 1.3.1",
                "pass: no rule matches",
                xf_fd,
                &player,
                true,
            ),
        ];
        let dir = std::env::temp_dir().join(format!("anypop-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut edges = Vec::new();
        let mut guards = Vec::new();
        for &n in &counts {
            let file = dir.join(format!("prefixes-{n}.txt"));
            write_prefixes(&file, n)?;
            let net = config::parse(&network(file.to_str().unwrap()), "bench.toml", &dir)?;
            let pins = std::path::PathBuf::from(format!(
                "/sys/fs/bpf/anypop-bench-{}-{n}",
                std::process::id()
            ));
            guards.push(PinGuard(pins.clone()));
            let mut edge = Edge::load(
                &pins,
                EdgeSizes {
                    max_services: 4,
                    flow_entries: 65_536,
                    bucket_entries: 65_536,
                },
            )?;
            let slot = edge.standby_generation()?;
            let t0 = Instant::now();
            let tables = compile::compile_edge(&net, "pop-1", slot, 4)?;
            edge.apply(&tables)?;
            eprintln!(
                "  {n} prefixes compiled and loaded in {:.2} s",
                t0.elapsed().as_secs_f64()
            );
            edge.add_interface(a0, mac, 1500)?;
            let fd = fd_of(edge.program())?;
            let label = format!("anypop edge ({n} prefixes)");
            cases.push(Case::new(
                &label,
                "flood drop: source in blocklist",
                fd,
                &flood,
                true,
            ));
            cases.push(Case::new(
                &label,
                "rate-limited drop (shared bucket, CAS)",
                fd,
                &limited,
                true,
            ));
            cases.push(Case::new(
                &label,
                "pass-through: not a VIP",
                fd,
                &other,
                true,
            ));
            cases.push(Case::new(
                &label,
                "forward: rules, Maglev, IPIP encap, XDP_TX",
                fd,
                &player,
                false,
            ));
            edges.push(edge);
        }
        let _ = std::fs::remove_dir_all(&dir);

        // The backend's programs on the same interface: a0 plays the backend 198.51.100.1,
        // players are reached through 198.51.100.21.
        let plane = backend_plane(BACKEND_NETWORK, "backend", &mut guards)?;
        let tunnelled = ipip(&player, [198, 51, 100, 50], [198, 51, 100, 1]);
        let reply = udp4([203, 0, 113, 10], [100, 64, 1, 2], 40000);
        let mut reply = reply;
        // source port 27015 (the service), destination the player's port
        reply[34..36].copy_from_slice(&27015u16.to_be_bytes());
        cases.push(
            Case::new(
                "empty TC program",
                "any frame",
                fd_of_tc(base.tc())?,
                &reply,
                true,
            )
            .tc(),
        );
        cases.push(Case::new(
            "anypop decap (XDP)",
            "IPIP from a POP: decapsulate, pass",
            fd_of(plane.decap())?,
            &tunnelled,
            false,
        ));
        cases.push(Case::new(
            "anypop decap (XDP)",
            "not ours: pass untouched",
            fd_of(plane.decap())?,
            &other,
            true,
        ));
        cases.push(
            Case::new(
                "anypop dsr (TC egress)",
                "service reply: FIB next hop, MACs",
                fd_of_tc(plane.dsr())?,
                &reply,
                true,
            )
            .tc(),
        );
        cases.push(
            Case::new(
                "anypop dsr (TC egress)",
                "not a service reply: untouched",
                fd_of_tc(plane.dsr())?,
                &other,
                true,
            )
            .tc(),
        );
        // The same backend in tunnel-compatible mode: its game server answered into the kernel's
        // IPIP tunnel (from the tunnel's address), and `dsr` strips the outer header, gives the
        // reply the VIP (checksums fixed) and the next hop. The player's flow is remembered
        // first, as `decap` does when the player's packet comes in.
        let tunnel_network = BACKEND_NETWORK.replace(
            "address = \"198.51.100.1\"",
            "address = \"198.51.100.1\"\nmode = \"tunnel\"",
        );
        let mut tun_plane = backend_plane(&tunnel_network, "backend-tunnel", &mut guards)?;
        run_xdp_raw_fd(fd_of(tun_plane.decap())?, &tunnelled, Some(a0), 1)?;
        let mut from_tunnel = udp4([10, 99, 0, 2], [100, 64, 1, 2], 40000);
        from_tunnel[34..36].copy_from_slice(&27015u16.to_be_bytes());
        let tunnel_reply = ipip(&from_tunnel, [198, 51, 100, 1], [198, 51, 100, 50]);
        // The case must take the path it names (a reply not caught would pass untouched, TC_ACT_OK
        // as well, at a fraction of the cost).
        run_tc_raw_fd(fd_of_tc(tun_plane.dsr())?, &tunnel_reply, a0, 1)?;
        let caught = tun_plane.snapshot()?.get(Reason::DsrTunnel).packets;
        if caught != 1 {
            bail!("the tunnel-mode reply was not handled as one (dsr_tunnel {caught}, want 1)");
        }
        cases.push(
            Case::new(
                "anypop dsr (TC egress, tunnel mode)",
                "reply in the tunnel: outer header off, VIP source, next hop",
                fd_of_tc(tun_plane.dsr())?,
                &tunnel_reply,
                false,
            )
            .tc(),
        );

        // Warm up state (rate-limit buckets exist and are empty; flows are pinned).
        for c in &cases {
            for _ in 0..3 {
                c.run(a0, 1)?;
            }
        }
        let rounds = 15u32;
        let per_round = (iterations / rounds).max(1);
        for round in 0..rounds {
            for c in cases.iter_mut() {
                if c.stateless {
                    let (a, ns) = c.run(a0, repeat)?;
                    c.action = a;
                    c.repeat_min = c.repeat_min.min(ns as f64);
                }
                for _ in 0..per_round {
                    let (a, ns) = c.run(a0, 1)?;
                    c.action = a;
                    c.single_total += ns;
                    c.single_n += 1;
                }
            }
            eprint!("\r  measuring: round {}/{rounds}", round + 1);
        }
        eprintln!();
        drop(edges);
        drop(plane);
        drop(tun_plane);
        Ok(cases
            .into_iter()
            .map(|c| Row {
                program: c.program,
                path: c.path,
                tc: c.tc,
                action: c.action,
                repeat_ns: c.stateless.then_some(c.repeat_min),
                single_ns: c.single_total as f64 / c.single_n.max(1) as f64,
            })
            .collect())
    })??;
    drop(xf);
    Ok(rows)
}

fn action_name(a: u32, tc: bool) -> &'static str {
    if tc {
        return match a {
            0 => "TC_ACT_OK",
            2 => "TC_ACT_SHOT",
            7 => "TC_ACT_REDIRECT",
            _ => "?",
        };
    }
    match a {
        0 => "ABORTED",
        1 => "DROP",
        2 => "PASS",
        3 => "TX",
        4 => "REDIRECT",
        _ => "?",
    }
}

/// A network at the scale of issue 5: `services` services, `rules` rules (scoped so that each
/// service has at most 64), one shared blocklist of `prefixes` prefixes.
fn large_network(services: usize, rules: usize, prefix_file: &str) -> String {
    let mut s = String::from("[defaults]\nnew_source_cap = 0\n");
    for i in 0..services {
        s.push_str(&format!(
            "\n[[service]]\nname = \"svc-{i}\"\nvip = \"203.0.113.{}\"\nprotocol = \"udp\"\nports = \"27015\"\nbackends = [\"be-1\", \"be-2\"]\nlimit = {{ pps = 300, burst = 2.0 }}\n",
            10 + i
        ));
    }
    for i in 0..rules {
        let svc = i % services;
        if i % 16 == 0 {
            s.push_str(&format!(
                "\n[[rule]]\nname = \"r{i}\"\naction = \"deny\"\nservices = [\"svc-{svc}\"]\nsrc_file = \"{prefix_file}\"\n"
            ));
        } else {
            s.push_str(&format!(
                "\n[[rule]]\nname = \"r{i}\"\naction = \"deny\"\nservices = [\"svc-{svc}\"]\nprotocol = \"udp\"\ndst_ports = \"27015\"\nttl = \"{}\"\n",
                i % 256
            ));
        }
    }
    s.push_str("\n[[node]]\nname = \"pop-1\"\nrole = \"pop\"\ninterfaces = [\"a0\"]\ntunnel_source = \"198.51.100.1\"\n");
    s.push_str("\n[[node]]\nname = \"be-1\"\nrole = \"backend\"\ninterface = \"eth0\"\naddress = \"192.0.2.21\"\n");
    s.push_str("\n[[node]]\nname = \"be-2\"\nrole = \"backend\"\ninterface = \"eth0\"\naddress = \"192.0.2.22\"\n");
    s
}

/// Times a whole config generation at scale: parse + validate, compile, write the standby slot,
/// switch. Returns (parse s, compile s, write+switch s).
/// Seconds a whole generation at scale took, by phase, and a one-prefix change after it.
pub struct ScaleApply {
    pub parse: f64,
    pub compile: f64,
    pub write: f64,
    /// Parse, compile and write of the same file with one prefix added to its blocklist.
    pub small_change: f64,
    pub small_written: crate::dataplane::edge::WriteStats,
}

pub fn apply_at_scale(
    services: usize,
    rules: usize,
    prefixes: usize,
) -> anyhow::Result<ScaleApply> {
    let dir = std::env::temp_dir().join(format!("anypop-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("blocklist.txt");
    write_prefixes(&file, prefixes)?;
    let text = large_network(services, rules, file.to_str().unwrap());
    let pins = PinGuard(std::path::PathBuf::from(format!(
        "/sys/fs/bpf/anypop-scale-{}",
        std::process::id()
    )));
    let result = (|| -> anyhow::Result<ScaleApply> {
        let mut edge = Edge::load(&pins.0, EdgeSizes::default())?;
        // A first generation, so the timed one replaces a live config as an apply would.
        let net = config::parse(&text, "scale.toml", &dir)?;
        let slot = edge.standby_generation()?;
        edge.apply(&compile::compile_edge(
            &net,
            "pop-1",
            slot,
            edge.sizes.max_services,
        )?)?;
        let t0 = Instant::now();
        let net = config::parse(&text, "scale.toml", &dir)?;
        let t1 = Instant::now();
        let slot = edge.standby_generation()?;
        let tables = compile::compile_edge(&net, "pop-1", slot, edge.sizes.max_services)?;
        let t2 = Instant::now();
        edge.apply(&tables)?;
        let t3 = Instant::now();
        // A small change: one prefix more in the shared blocklist. The slot it goes to was
        // written by the first apply, so only what differs is rewritten.
        let mut list = std::fs::read_to_string(&file)?;
        list.push_str("100.99.0.0/16\n");
        std::fs::write(&file, list)?;
        let t4 = Instant::now();
        let net = config::parse(&text, "scale.toml", &dir)?;
        let slot = edge.standby_generation()?;
        let tables = compile::compile_edge(&net, "pop-1", slot, edge.sizes.max_services)?;
        let small = edge.apply(&tables)?;
        let t5 = Instant::now();
        Ok(ScaleApply {
            parse: (t1 - t0).as_secs_f64(),
            compile: (t2 - t1).as_secs_f64(),
            write: (t3 - t2).as_secs_f64(),
            small_change: (t5 - t4).as_secs_f64(),
            small_written: small.written,
        })
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The machine the figures were measured on.
pub fn machine_facts() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpu}, {cores} cores, kernel {}", kernel.trim())
}

/// A Markdown table of the rows.
pub fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str("| program | path | verdict | ns/pkt (repeat) | ns/pkt (single run) |\n|---|---|---|---:|---:|\n");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.0} |",
            r.program,
            r.path,
            action_name(r.action, r.tc),
            r.repeat_ns
                .map(|v| format!("{v:.1}"))
                .unwrap_or_else(|| "n/a (rewrites frame)".into()),
            r.single_ns
        );
    }
    s
}
