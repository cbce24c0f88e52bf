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

use crate::{
    config,
    dataplane::{
        baseline::Baseline,
        edge::{Edge, EdgeSizes},
        testrun::{run_xdp, run_xdp_raw_fd},
    },
    lab::netns::{Netns, run_cmd},
};

/// One measured path.
#[derive(Clone, Debug)]
pub struct Row {
    pub program: String,
    pub path: String,
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
    let mut sum = 0u32;
    for c in ip.chunks(2) {
        sum += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
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

/// Measures a program fd/closure both ways.
struct Meter {
    iterations: u32,
    repeat: u32,
}

impl Meter {
    fn single(
        &self,
        mut run: impl FnMut() -> anyhow::Result<(u32, u64)>,
    ) -> anyhow::Result<(u32, f64)> {
        let mut total = 0u64;
        let mut action = 0;
        for _ in 0..self.iterations {
            let (a, ns) = run()?;
            action = a;
            total += ns;
        }
        Ok((action, total as f64 / self.iterations as f64))
    }

    fn repeated(
        &self,
        mut run: impl FnMut(u32) -> anyhow::Result<(u32, u64)>,
    ) -> anyhow::Result<(u32, f64)> {
        let mut samples = Vec::new();
        let mut action = 0;
        for _ in 0..7 {
            let (a, ns) = run(self.repeat)?;
            action = a;
            samples.push(ns as f64);
        }
        // The minimum: on a shared VM, noise only ever adds time.
        samples.sort_by(|a, b| a.total_cmp(b));
        Ok((action, samples[0]))
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
        let p = p.map_err(|e| anyhow!("listing programs: {e}"))?;
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
    let xf = xdp_filter_prog(&ns)?;
    let xf_fd = xf.as_fd().as_raw_fd();
    let counts = prefix_counts.to_vec();
    let rows = ns.run(move || -> anyhow::Result<Vec<Row>> {
        let meter = Meter { iterations, repeat };
        let a0 = crate::daemon::ifindex("a0", "bench")?;
        let mac = crate::daemon::mac_of("a0")?;
        let flood = udp4([198, 18, 7, 7], [203, 0, 113, 10], 27015);
        let player = udp4([100, 64, 1, 2], [203, 0, 113, 10], 27015);
        let limited = udp4([100, 100, 0, 1], [203, 0, 113, 10], 27016);
        let other = udp4([100, 64, 1, 2], [198, 51, 100, 1], 22);
        let mut rows = Vec::new();

        let base = Baseline::load()?;
        for (name, path) in [
            ("empty XDP program", "base_pass"),
            ("bare XDP_DROP", "base_drop"),
        ] {
            let p = base.program(path);
            let (a, r) = meter.repeated(|n| {
                Ok(run_xdp(p, &flood, Some(a0), n).map(|r| (r.action, r.ns_per_run))?)
            })?;
            let (_, s) = meter.single(|| {
                Ok(run_xdp(p, &flood, Some(a0), 1).map(|r| (r.action, r.ns_per_run))?)
            })?;
            rows.push(Row {
                program: name.into(),
                path: "any frame".into(),
                action: a,
                repeat_ns: Some(r),
                single_ns: s,
            });
        }
        for (path, frame) in [
            ("drop: source on deny rule (1 address)", &flood),
            ("pass: no rule matches", &player),
        ] {
            let (a, r) = meter.repeated(|n| Ok(run_xdp_raw_fd(xf_fd, frame, n)?))?;
            let (_, s) = meter.single(|| Ok(run_xdp_raw_fd(xf_fd, frame, 1)?))?;
            rows.push(Row {
                program: "xdp-filter 1.3.1".into(),
                path: path.into(),
                action: a,
                repeat_ns: Some(r),
                single_ns: s,
            });
        }

        let dir = std::env::temp_dir().join(format!("anypop-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        for &n in &counts {
            let file = dir.join(format!("prefixes-{n}.txt"));
            write_prefixes(&file, n)?;
            let net = config::parse(&network(file.to_str().unwrap()), "bench.toml", &dir)
                .map_err(|e| anyhow!("{e}"))?;
            let pins = std::path::PathBuf::from(format!(
                "/sys/fs/bpf/anypop-bench-{}-{n}",
                std::process::id()
            ));
            let result = (|| -> anyhow::Result<()> {
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
                let tables = config::compile::compile_edge(&net, "pop-1", slot, 4)
                    .map_err(|e| anyhow!("{e}"))?;
                edge.apply(&tables)?;
                eprintln!(
                    "  {n} prefixes compiled and loaded in {:.2} s",
                    t0.elapsed().as_secs_f64()
                );
                edge.add_interface(a0, mac)?;
                let p = edge.program();
                let label = format!("anypop edge ({n} prefixes)");
                let paths: [(&str, &Vec<u8>, bool); 4] = [
                    ("flood drop: source in blocklist", &flood, true),
                    ("rate-limited drop (shared bucket, CAS)", &limited, true),
                    ("pass-through: not a VIP", &other, true),
                    ("forward: rules, Maglev, IPIP encap, XDP_TX", &player, false),
                ];
                for (path, frame, stateless) in paths {
                    // Warm up state (bucket exists and is empty; flow pinned).
                    for _ in 0..3 {
                        run_xdp(p, frame, Some(a0), 1)?;
                    }
                    let (a, r) = if stateless {
                        let (a, r) = meter.repeated(|k| {
                            Ok(run_xdp(p, frame, Some(a0), k).map(|r| (r.action, r.ns_per_run))?)
                        })?;
                        (a, Some(r))
                    } else {
                        (run_xdp(p, frame, Some(a0), 1)?.action, None)
                    };
                    let (_, s) = meter.single(|| {
                        Ok(run_xdp(p, frame, Some(a0), 1).map(|r| (r.action, r.ns_per_run))?)
                    })?;
                    rows.push(Row {
                        program: label.clone(),
                        path: path.into(),
                        action: a,
                        repeat_ns: r,
                        single_ns: s,
                    });
                }
                Ok(())
            })();
            let _ = std::fs::remove_dir_all(&pins);
            result?;
        }
        let _ = std::fs::remove_dir_all(&dir);
        Ok(rows)
    })??;
    drop(xf);
    Ok(rows)
}

fn action_name(a: u32) -> &'static str {
    match a {
        0 => "ABORTED",
        1 => "DROP",
        2 => "PASS",
        3 => "TX",
        4 => "REDIRECT",
        _ => "?",
    }
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
            action_name(r.action),
            r.repeat_ns
                .map(|v| format!("{v:.1}"))
                .unwrap_or_else(|| "n/a (rewrites frame)".into()),
            r.single_ns
        );
    }
    s
}
