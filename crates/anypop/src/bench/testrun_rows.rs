//! The test-run rows of `anypop bench`: the namespace and veth the programs run against, every
//! (program, frame) case — baselines, xdp-filter, the edge at each blocklist size, the backend's
//! programs in both modes — and the interleaved rounds that time them.
use std::{
    os::fd::{AsFd, AsRawFd},
    process::Command,
    time::Instant,
};

use anyhow::{Context, anyhow, bail};

use super::{
    PinGuard, Row,
    frames::{ipip, reply4, udp4, write_prefixes},
};
use crate::{
    compile,
    config::{self, sample},
    dataplane::{
        backend::BackendPlane,
        baseline::Baseline,
        edge::{Edge, EdgeSizes},
        testrun::{run_tc_raw_fd, run_xdp_raw_fd},
    },
    lab::netns::{Netns, run_cmd},
    sys::testns::NetSetup,
};
use anypop_common::verdict::Reason;

/// The benchmark's network: a blocklist of `prefixes` prefixes (plus the attacker's range), a
/// forwarded service and a rate-limited one.
fn network(prefix_file: &str) -> String {
    let [pop, be1] = sample::pop1_be1(&["a0"]);
    sample::network(&[
        sample::no_source_cap(),
        sample::udp_service("game", "27015"),
        sample::udp_service("limited", "27016").val("limit", "{ pps = 1, burst = 1.0 }"),
        sample::rule("blocklist", "deny")
            .list("src", &[sample::ATTACKERS])
            .str("src_file", prefix_file),
        pop,
        be1,
    ])
}

/// The backend side of the benchmark: be-1 at a0's address (in `mode`), one POP.
fn backend_network(mode: &str) -> String {
    sample::network(&[
        sample::udp_service("game", "27015"),
        sample::pop("pop-1", &["eth0"], "198.51.100.50"),
        sample::backend("be-1", "a0", sample::TUNNEL).str("mode", mode),
    ])
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

/// The xdp-filter peer: loaded on the namespace's veth with a deny rule for one source address.
/// Its program is found by name and run through BPF_PROG_TEST_RUN like ours.
pub(super) fn xdp_filter_prog(ns: &Netns) -> anyhow::Result<aya::programs::ProgramFd> {
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

/// The benchmark's namespace: the veth pair `a0`/`a1` the programs run against, `a0` at the POP's
/// address with the backend as a permanent neighbour, forwarding on, the VIP on `lo` and the
/// players' range routed through the backend.
pub(super) fn namespace() -> anyhow::Result<Netns> {
    let ns = Netns::new("bench")?;
    ns.apply(
        NetSetup::new()
            .veth("a0", "a1")
            .addr("198.51.100.1/24", "a0")
            .neigh(sample::BE1, "02:00:00:00:00:21", "a0")
            .forwarding(&["all", "a0"])
            .addr("203.0.113.10/32", "lo")
            .route("100.64.0.0/10", sample::BE1),
    )?;
    Ok(ns)
}

/// The frames every case is built from.
struct Frames {
    /// From the attacker's range to the game service.
    flood: Vec<u8>,
    /// A player to the game service (forwarded).
    player: Vec<u8>,
    /// To the rate-limited service.
    limited: Vec<u8>,
    /// Not to a VIP: passes through.
    other: Vec<u8>,
}

impl Frames {
    fn new() -> Frames {
        Frames {
            flood: udp4([198, 18, 7, 7], [203, 0, 113, 10], 27015),
            player: udp4([100, 64, 1, 2], [203, 0, 113, 10], 27015),
            limited: udp4([100, 100, 0, 1], [203, 0, 113, 10], 27016),
            other: udp4([100, 64, 1, 2], [198, 51, 100, 1], 22),
        }
    }
}

fn xdp_fd(p: &aya::programs::Xdp) -> anyhow::Result<i32> {
    Ok(p.fd()?.as_fd().as_raw_fd())
}

fn tc_fd(p: &aya::programs::SchedClassifier) -> anyhow::Result<i32> {
    Ok(p.fd()?.as_fd().as_raw_fd())
}

/// Inside the benchmark's namespace: loads every case, measures them all and returns one row
/// per case, in the order they were built.
pub(super) fn rows(
    xf_fd: i32,
    counts: &[usize],
    iterations: u32,
    repeat: u32,
) -> anyhow::Result<Vec<Row>> {
    let a0 = crate::sys::iface::ifindex("a0", "bench")?;
    let mac = crate::sys::iface::mac_of("a0")?;
    let frames = Frames::new();
    // Every program stays loaded for the whole run, so the measurements can be interleaved:
    // on a shared VM the noise then falls on all of them alike.
    let base = Baseline::load()?;
    let mut cases = baseline_cases(&base, xf_fd, &frames)?;
    let mut guards = Vec::new();
    let edges = edge_cases(counts, a0, mac, &frames, &mut guards, &mut cases)?;
    let (plane, tun_plane) = backend_cases(&base, a0, &frames, &mut guards, &mut cases)?;
    measure(&mut cases, a0, iterations, repeat)?;
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
}

/// The floor every figure is read against: an empty program, a bare drop, and xdp-filter.
fn baseline_cases(base: &Baseline, xf_fd: i32, frames: &Frames) -> anyhow::Result<Vec<Case>> {
    Ok(vec![
        Case::new(
            "empty XDP program",
            "any frame",
            xdp_fd(base.program("base_pass"))?,
            &frames.flood,
            true,
        ),
        Case::new(
            "bare XDP_DROP",
            "any frame",
            xdp_fd(base.program("base_drop"))?,
            &frames.flood,
            true,
        ),
        Case::new(
            "xdp-filter 1.3.1",
            "drop: source on deny rule (1 address)",
            xf_fd,
            &frames.flood,
            true,
        ),
        Case::new(
            "xdp-filter 1.3.1",
            "pass: no rule matches",
            xf_fd,
            &frames.player,
            true,
        ),
    ])
}

/// One edge per blocklist size in `counts`, each compiled, loaded and attached to `a0`, with its
/// four paths as cases. Returns the edges, which must outlive the measurement.
fn edge_cases(
    counts: &[usize],
    a0: u32,
    mac: [u8; 6],
    frames: &Frames,
    guards: &mut Vec<PinGuard>,
    cases: &mut Vec<Case>,
) -> anyhow::Result<Vec<Edge>> {
    let dir = std::env::temp_dir().join(format!("anypop-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut edges = Vec::new();
    for &n in counts {
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
        let fd = xdp_fd(edge.program())?;
        let label = format!("anypop edge ({n} prefixes)");
        cases.push(Case::new(
            &label,
            "flood drop: source in blocklist",
            fd,
            &frames.flood,
            true,
        ));
        cases.push(Case::new(
            &label,
            "rate-limited drop (shared bucket, CAS)",
            fd,
            &frames.limited,
            true,
        ));
        cases.push(Case::new(
            &label,
            "pass-through: not a VIP",
            fd,
            &frames.other,
            true,
        ));
        cases.push(Case::new(
            &label,
            "forward: rules, Maglev, IPIP encap, XDP_TX",
            fd,
            &frames.player,
            false,
        ));
        edges.push(edge);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(edges)
}

/// The backend's programs on the same interface: a0 plays the backend 198.51.100.1, players are
/// reached through 198.51.100.21. Native mode (with an empty TC program as the TC floor), then
/// tunnel mode. Returns both planes, which must outlive the measurement.
fn backend_cases(
    base: &Baseline,
    a0: u32,
    frames: &Frames,
    guards: &mut Vec<PinGuard>,
    cases: &mut Vec<Case>,
) -> anyhow::Result<(BackendPlane, BackendPlane)> {
    let plane = backend_plane(&backend_network("native"), "backend", guards)?;
    let tunnelled = ipip(&frames.player, [198, 51, 100, 50], [198, 51, 100, 1]);
    let reply = reply4([203, 0, 113, 10], [100, 64, 1, 2]);
    cases.push(
        Case::new(
            "empty TC program",
            "any frame",
            tc_fd(base.tc())?,
            &reply,
            true,
        )
        .tc(),
    );
    cases.push(Case::new(
        "anypop decap (XDP)",
        "IPIP from a POP: decapsulate, pass",
        xdp_fd(plane.decap())?,
        &tunnelled,
        false,
    ));
    cases.push(Case::new(
        "anypop decap (XDP)",
        "not ours: pass untouched",
        xdp_fd(plane.decap())?,
        &frames.other,
        true,
    ));
    cases.push(
        Case::new(
            "anypop dsr (TC egress)",
            "service reply: FIB next hop, MACs",
            tc_fd(plane.dsr())?,
            &reply,
            true,
        )
        .tc(),
    );
    cases.push(
        Case::new(
            "anypop dsr (TC egress)",
            "not a service reply: untouched",
            tc_fd(plane.dsr())?,
            &frames.other,
            true,
        )
        .tc(),
    );
    let tun_plane = tunnel_case(a0, &tunnelled, guards, cases)?;
    Ok((plane, tun_plane))
}

/// The same backend in tunnel-compatible mode: its game server answered into the kernel's IPIP
/// tunnel (from the tunnel's address), and `dsr` strips the outer header, gives the reply the VIP
/// (checksums fixed) and the next hop. The player's flow is remembered first, as `decap` does
/// when the player's packet (`tunnelled`) comes in.
fn tunnel_case(
    a0: u32,
    tunnelled: &[u8],
    guards: &mut Vec<PinGuard>,
    cases: &mut Vec<Case>,
) -> anyhow::Result<BackendPlane> {
    let mut tun_plane = backend_plane(&backend_network("tunnel"), "backend-tunnel", guards)?;
    run_xdp_raw_fd(xdp_fd(tun_plane.decap())?, tunnelled, Some(a0), 1)?;
    let from_tunnel = reply4([10, 99, 0, 2], [100, 64, 1, 2]);
    let tunnel_reply = ipip(&from_tunnel, [198, 51, 100, 1], [198, 51, 100, 50]);
    // The case must take the path it names (a reply not caught would pass untouched, TC_ACT_OK
    // as well, at a fraction of the cost).
    run_tc_raw_fd(tc_fd(tun_plane.dsr())?, &tunnel_reply, a0, 1)?;
    let caught = tun_plane.snapshot()?.get(Reason::DsrTunnel).packets;
    if caught != 1 {
        bail!("the tunnel-mode reply was not handled as one (dsr_tunnel {caught}, want 1)");
    }
    cases.push(
        Case::new(
            "anypop dsr (TC egress, tunnel mode)",
            "reply in the tunnel: outer header off, VIP source, next hop",
            tc_fd(tun_plane.dsr())?,
            &tunnel_reply,
            false,
        )
        .tc(),
    );
    Ok(tun_plane)
}

/// Warms every case up, then measures them interleaved: 15 rounds, each running every case by
/// both methods (`repeat` where the frame survives, `single` always).
fn measure(cases: &mut [Case], a0: u32, iterations: u32, repeat: u32) -> anyhow::Result<()> {
    // Warm up state (rate-limit buckets exist and are empty; flows are pinned).
    for c in cases.iter() {
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
    Ok(())
}
