//! `anypop bench --throughput`: packets per second through a real veth pair, each figure beside
//! its baselines measured in the same run, on the same pair, with the same generator.
//!
//! Topology: two private namespaces joined by a veth pair. The generator namespace holds `g0`:
//! [`TrafficGen`] sends live frames out of it (BPF_PROG_TEST_RUN, one syscall per batch). The
//! device under test (DUT) namespace holds `g1`, where in turn run: a bare XDP_DROP, the `edge`
//! program (loaded by [`Pop::start_with`], the daemon's own start), Debian's `xdp-filter`, an
//! nftables drop in the netdev ingress hook, and for forwarding the `edge` again and a bare
//! XDP_TX MAC swap. Frames sent back by XDP_TX arrive on `g0`, where a bare XDP_DROP sinks them
//! (veth accepts XDP frames only on a peer that has NAPI running, which an XDP program or GRO
//! gives it).
//!
//! Why threaded NAPI and pinning: a live-frames test run flushes each batch into the peer's ring
//! and raises the peer's NAPI softirq on its own CPU, so by default the generator and the DUT
//! take turns on one core and the figure is the sum of both costs. Here `g1`'s NAPI runs in its
//! own kernel thread (`/sys/class/net/g1/threaded`), pinned to the last CPU; the generator and
//! `g0`'s NAPI (the sink, a thread too) are pinned to CPU 0. The DUT then has a core to itself,
//! frames it cannot keep up with overflow the 256-entry veth ring (counted), and its NAPI
//! thread's CPU time gives a second, load-independent figure: frames per second of DUT CPU.
//! Generator, sink and DUT run at real-time priority while measured, so that other work on a
//! shared machine does not take turns with them (see [`Spinner`] for the DUT's idle CPU).
//!
//! `g1` has GRO switched on: it keeps veth's NAPI (and so the pinned thread) alive while XDP
//! programs are swapped, and it is what lets nftables see frames at all without an XDP program.
use std::{
    collections::HashMap,
    fmt::Write as _,
    fs::File,
    net::Ipv4Addr,
    os::fd::AsRawFd,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};

use crate::{
    config,
    daemon::Pop,
    dataplane::{baseline::Baseline, trafficgen::TrafficGen},
    lab::netns::{Netns, run_cmd, veth},
};
use anypop_common::verdict::Reason;

/// How much to send.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Frames per measurement (one generator call).
    pub frames: u32,
    /// Rounds; every DUT is measured once per round, in a rotating order.
    pub rounds: u32,
    /// Only the forward path (edge with players) and its baseline (bare XDP_TX): the quick
    /// measurement while working on the forward path.
    pub forward_only: bool,
    /// Runs the DUT's NAPI thread on the generator's CPU (at a higher real-time priority, so it
    /// takes each batch as it is flushed) instead of a CPU of its own: veth then returns each
    /// frame's page to the page pool on the CPU that allocated it, as a NIC driver does, rather
    /// than across CPUs; that fixed cost is paid by every DUT alike.
    pub one_cpu: bool,
}

/// What runs on `g1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dut {
    BareDrop,
    /// Bare XDP_DROP after reading the frame's EtherType and IPv4 source (`base_drop_read`).
    BareDropRead,
    Edge,
    XdpFilter,
    Nftables,
    /// nftables in the IPv4 prerouting hook at raw priority: where iptables' raw table drops.
    NftRaw,
    BareTx,
}

impl Dut {
    pub fn label(self) -> &'static str {
        match self {
            Dut::BareDrop => "bare XDP_DROP",
            Dut::BareDropRead => "bare XDP_DROP, reading the frame",
            Dut::Edge => "anypop edge",
            Dut::XdpFilter => "xdp-filter 1.3.1",
            Dut::Nftables => "nftables netdev ingress",
            Dut::NftRaw => "nftables ip prerouting raw (iptables raw's hook)",
            Dut::BareTx => "bare XDP_TX (MAC swap)",
        }
    }

    /// The traffic each DUT is measured with. xdp-filter matches exact addresses only (a hash of
    /// source addresses, no prefixes), so it gets the fixed-source flood only.
    fn traffic(self) -> &'static [Traffic] {
        match self {
            Dut::BareDrop | Dut::BareDropRead | Dut::Nftables | Dut::NftRaw => {
                &[Traffic::FloodFixed, Traffic::FloodRandom]
            }
            Dut::Edge => &[Traffic::FloodFixed, Traffic::FloodRandom, Traffic::Players],
            Dut::XdpFilter => &[Traffic::FloodFixed],
            Dut::BareTx => &[Traffic::Players],
        }
    }
}

/// What the generator sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Traffic {
    /// A flood from one source, 198.18.7.7 (inside the deny rule's 198.18.0.0/15).
    FloodFixed,
    /// A flood from random sources in 198.18.0.0/15 with random source ports.
    FloodRandom,
    /// Players: random sources in 100.64.0.0/18 (16,384 flows), to the forwarded service.
    Players,
}

impl Traffic {
    pub fn label(self) -> &'static str {
        match self {
            Traffic::FloodFixed => "flood, 1 source",
            Traffic::FloodRandom => "flood, random sources /15",
            Traffic::Players => "players, 16,384 flows",
        }
    }

    pub fn forward(self) -> bool {
        self == Traffic::Players
    }
}

/// One measurement: one generator call of `sent` frames.
#[derive(Clone, Debug)]
pub struct Sample {
    pub dut: Dut,
    pub traffic: Traffic,
    /// The round it was measured in (every DUT once per round).
    pub round: u32,
    pub sent: u64,
    /// Wall time of the generator call.
    pub secs: f64,
    /// Frames that went into `g1`'s ring (veth's `tx_queue_0_xdp_xmit` of `g0`).
    pub accepted: u64,
    /// Frames the full ring refused (`tx_queue_0_xdp_xmit_errors` of `g0`).
    pub ring_drops: u64,
    /// Frames `g1`'s NAPI took from the ring (`rx_queue_0_xdp_packets`).
    pub seen: u64,
    /// The DUT's own count of the verdict it should give (program counter, nft counter, or
    /// veth's XDP drop / XDP_TX count for the bare programs and xdp-filter).
    pub counted: u64,
    /// Frames that came back to `g0` (forwarding).
    pub returned: u64,
    /// Frames XDP_TX could not put into `g0`'s full ring (`rx_queue_0_xdp_tx_errors` of `g1`).
    pub tx_errors: u64,
    /// CPU time of `g1`'s NAPI thread during the call.
    pub dut_cpu_secs: f64,
}

impl Sample {
    /// The generator's rate.
    pub fn offered_mpps(&self) -> f64 {
        self.sent as f64 / self.secs / 1e6
    }

    /// Frames the DUT handled per second of the run: frames it took for a drop, frames that came
    /// back for a forward.
    pub fn mpps(&self) -> f64 {
        let done = if self.traffic.forward() {
            self.returned
        } else {
            self.seen
        };
        done as f64 / self.secs / 1e6
    }

    /// Frames per second of the DUT core's busy time: the DUT's capacity whether or not the
    /// generator kept it busy.
    pub fn per_core_mpps(&self) -> f64 {
        if self.dut_cpu_secs <= 0.0 {
            return 0.0;
        }
        self.seen as f64 / self.dut_cpu_secs / 1e6
    }
}

/// One of issue 4's targets against what a run measured: medians of the per-round ratios.
#[derive(Clone, Debug)]
pub struct Ratio {
    pub what: String,
    /// DUT Mpps over the baseline's.
    pub wall: f64,
    /// Mpps per DUT core-second over the baseline's.
    pub core: f64,
    /// The per-core ratio's lowest and highest round.
    pub core_lowest: f64,
    pub core_highest: f64,
    /// What issue 4 asks for.
    pub target: f64,
}

/// Everything one run measured.
pub struct Report {
    pub samples: Vec<Sample>,
    /// CPU of the generator and the sink, CPU of the DUT's NAPI thread (None on one core).
    pub cpus: Option<(usize, usize)>,
}

/// The DUT's network: a deny rule for the attacker's range, a forwarded service without limits.
const NETWORK: &str = r#"
[defaults]
new_source_cap = 0

[[service]]
name = "game"
vip = "203.0.113.10"
protocol = "udp"
ports = "27015"
backends = ["be-1"]

[[rule]]
name = "attackers"
action = "deny"
src = ["198.18.0.0/15"]

[[node]]
name = "pop-1"
role = "pop"
interfaces = ["g1"]
tunnel_source = "10.1.0.1"

[[node]]
name = "be-1"
role = "backend"
interface = "eth0"
address = "10.1.8.0"
"#;

/// The backend: in `g1`'s subnet, its MAC that of `g0`, so forwarded frames go back to `g0`.
///
/// Why an address ending in `.8.0`: live-frames test runs recycle their pages without copying
/// the frame in again (only the data pointers are reset), and `edge` writes its new Ethernet and
/// outer IPv4 header 20 bytes before the original frame, so the original Ethernet header is
/// overwritten by the last 14 bytes of the outer header. Those end with the outer destination:
/// with `x.x.8.0` the recycled frame's EtherType reads 0x0800 and it is again a valid player
/// frame (inner IP header and payload untouched; the generator rewrites the source). With any
/// other backend address every frame after the first pass would be `pass_not_ip`.
const BACKEND: &str = "10.1.8.0";
const FLOOD_SOURCE: [u8; 4] = [198, 18, 7, 7];
const VIP: [u8; 4] = [203, 0, 113, 10];
const PORT: u16 = 27015;

/// A 64-byte UDP frame (the classic minimum; 22 bytes of payload).
fn frame(src_mac: [u8; 6], dst_mac: [u8; 6], src: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let payload = [0x5au8; 22];
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + 8 + payload.len()) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&VIP);
    let c = super::ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&PORT.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&payload);
    f
}

/// Moves the calling thread into a named namespace (commands it spawns follow it).
fn enter(ns: &str) -> anyhow::Result<()> {
    let path = format!("/run/netns/{ns}");
    let file = File::open(&path).with_context(|| format!("opening {path}"))?;
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {ns}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Pins a thread (0: the calling one) to one CPU.
fn pin(tid: i32, cpu: usize) -> anyhow::Result<()> {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "sched_setaffinity({tid}, cpu {cpu}): {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Gives a thread a scheduling policy (SCHED_FIFO with priority 1, or SCHED_IDLE with 0).
fn policy(tid: i32, policy: i32, priority: i32) -> anyhow::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    if unsafe { libc::sched_setscheduler(tid, policy, &param) } != 0 {
        bail!(
            "sched_setscheduler({tid}, {policy}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// A SCHED_IDLE thread spinning on the DUT's CPU so that the CPU never halts. Without it every
/// batch of 64 frames wakes the DUT's NAPI thread on a halted virtual CPU, which costs a VM exit
/// and a wake-up on the host: long enough for the generator to overflow the 256-frame veth ring
/// even when the DUT has time to spare. SCHED_IDLE gives way at once to the NAPI thread or
/// anything else that wants the CPU, and its time is not the DUT's.
struct Spinner {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Spinner {
    fn start(cpu: usize) -> Spinner {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            if pin(0, cpu).is_err() || policy(0, libc::SCHED_IDLE, 0).is_err() {
                return;
            }
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        Spinner {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Kernel threads whose name starts with `prefix` (NAPI threads are `napi/<ifname>-<id>`).
fn threads_named(prefix: &str) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end().starts_with(prefix))
            {
                out.push(pid);
            }
        }
    }
    out
}

/// Switches an interface's NAPI to a kernel thread of its own and returns that thread. sysfs
/// shows the namespace it was mounted in, so the write goes through `ip netns exec` (which
/// mounts a sysfs for the namespace; no bpffs is involved).
fn threaded_napi(ns: &str, ifname: &str) -> anyhow::Result<i32> {
    let prefix = format!("napi/{ifname}-");
    let before = threads_named(&prefix);
    run_cmd(&[
        "ip",
        "netns",
        "exec",
        ns,
        "sh",
        "-c",
        &format!("echo 1 > /sys/class/net/{ifname}/threaded"),
    ])?;
    let new: Vec<i32> = threads_named(&prefix)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    match new[..] {
        [tid] => Ok(tid),
        _ => bail!("expected one new NAPI thread for {ifname}, found {new:?}"),
    }
}

/// CPU time a thread has run, in seconds (first field of schedstat, ns).
fn cpu_secs(tid: i32) -> f64 {
    std::fs::read_to_string(format!("/proc/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0) as f64
        / 1e9
}

/// veth's per-queue statistics (`ethtool -S`) of an interface in the calling thread's namespace.
fn ethtool_stats(ifname: &str) -> anyhow::Result<HashMap<String, u64>> {
    let out = run_cmd(&["ethtool", "-S", ifname])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_owned(), v.trim().parse().ok()?))
        })
        .collect())
}

fn stat(m: &HashMap<String, u64>, k: &str) -> u64 {
    m.get(k).copied().unwrap_or(0)
}

/// The packets counted by the nftables rule's counter.
fn nft_counter(family: &str, table: &str) -> anyhow::Result<u64> {
    let out = run_cmd(&["nft", "list", "table", family, table])?;
    let n = out
        .split_once("counter packets ")
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow!("no counter in nft table {table}: {out}"))?;
    Ok(n)
}

/// A DUT attached to `g1`. Dropping a `Base` or an `Edge` detaches it; xdp-filter and the nft
/// table are removed by [`Attached::detach`], and in any case with the namespace.
enum Attached {
    Base(Baseline, &'static str),
    Edge(Box<Pop>),
    XdpFilter,
    /// nft family and table name.
    Nft(&'static str, String),
}

/// One reading of every counter a measurement uses.
struct Counters {
    /// `ethtool -S g0` (generator side: into the ring, ring full, frames back).
    g0: HashMap<String, u64>,
    /// `ethtool -S g1` (DUT side: frames taken, XDP drops and XDP_TX).
    g1: HashMap<String, u64>,
    /// The DUT's own counter.
    counted: u64,
    /// CPU seconds of g1's NAPI thread.
    cpu: f64,
}

/// The run's fixed state, shared by every measurement.
struct Bench {
    gen_ns: String,
    dut_ns: String,
    pins: std::path::PathBuf,
    net: config::Network,
    generator: TrafficGen,
    g0: u32,
    dut_thread: i32,
    /// Two CPUs or more: generator and DUT run at real-time priority, each on its own CPU.
    realtime: bool,
    flood: Vec<u8>,
    player: Vec<u8>,
    frames: u32,
}

impl Bench {
    fn attach(&self, dut: Dut) -> anyhow::Result<Attached> {
        enter(&self.dut_ns)?;
        Ok(match dut {
            Dut::BareDrop | Dut::BareDropRead | Dut::BareTx => {
                let name = match dut {
                    Dut::BareDrop => "base_drop",
                    Dut::BareDropRead => "base_drop_read",
                    _ => "base_tx",
                };
                let mut b = Baseline::load()?;
                b.attach(name, "g1")?;
                Attached::Base(b, name)
            }
            Dut::Edge => Attached::Edge(Box::new(Pop::start_with(&self.net, "pop-1", &self.pins)?)),
            Dut::XdpFilter => {
                // As in `anypop bench`: a fresh bpffs in `ip netns exec`'s private mount
                // namespace holds xdp-filter's pins, so nothing leaks into the host's bpffs;
                // the attachment (netlink) outlives it and is removed with `ip link`.
                let script = format!(
                    "mount -t bpf bpf /sys/fs/bpf && xdp-filter load -m native -f ipv4 g1 && xdp-filter ip {} -m src",
                    Ipv4Addr::from(FLOOD_SOURCE)
                );
                run_cmd(&["ip", "netns", "exec", &self.dut_ns, "sh", "-c", &script])?;
                Attached::XdpFilter
            }
            Dut::Nftables | Dut::NftRaw => {
                let (family, chain) = if dut == Dut::Nftables {
                    (
                        "netdev",
                        "{ type filter hook ingress device g1 priority 0 ; }",
                    )
                } else {
                    ("ip", "{ type filter hook prerouting priority raw ; }")
                };
                let table = format!("anypop_tput_{}", std::process::id());
                run_cmd(&["nft", "add", "table", family, &table])?;
                let a = Attached::Nft(family, table.clone());
                run_cmd(&["nft", "add", "chain", family, &table, "flood", chain])?;
                run_cmd(&[
                    "nft",
                    "add",
                    "rule",
                    family,
                    &table,
                    "flood",
                    "ip",
                    "saddr",
                    "198.18.0.0/15",
                    "counter",
                    "drop",
                ])?;
                a
            }
        })
    }

    fn detach(&self, a: Attached) -> anyhow::Result<()> {
        enter(&self.dut_ns)?;
        match a {
            Attached::Base(b, _) => drop(b),
            Attached::Edge(pop) => pop.stop(false)?,
            Attached::XdpFilter => {
                run_cmd(&["ip", "link", "set", "dev", "g1", "xdpdrv", "off"])?;
            }
            Attached::Nft(family, table) => {
                run_cmd(&["nft", "delete", "table", family, &table])?;
            }
        }
        Ok(())
    }

    /// The DUT's own count of the verdict it should give to `traffic`.
    fn counted(
        &self,
        a: &mut Attached,
        traffic: Traffic,
        g1: &HashMap<String, u64>,
    ) -> anyhow::Result<u64> {
        Ok(match a {
            Attached::Base(_, "base_tx") => stat(g1, "rx_queue_0_xdp_tx"),
            Attached::Base(..) | Attached::XdpFilter => stat(g1, "rx_queue_0_xdp_drops"),
            Attached::Edge(pop) => {
                let s = pop.snapshot()?;
                if traffic.forward() {
                    s.get(Reason::FwdIpip).packets
                } else {
                    s.get(Reason::DropRule).packets
                }
            }
            Attached::Nft(family, table) => nft_counter(family, table)?,
        })
    }

    /// Configures the generator for `traffic` and returns the frame to send.
    fn prepare(&mut self, traffic: Traffic) -> anyhow::Result<Vec<u8>> {
        Ok(match traffic {
            Traffic::FloodFixed => {
                self.generator.configure(FLOOD_SOURCE.into(), 32, false)?;
                self.flood.clone()
            }
            Traffic::FloodRandom => {
                self.generator
                    .configure(Ipv4Addr::new(198, 18, 0, 0), 15, true)?;
                self.flood.clone()
            }
            Traffic::Players => {
                self.generator
                    .configure(Ipv4Addr::new(100, 64, 0, 0), 18, false)?;
                self.player.clone()
            }
        })
    }

    /// Every counter on both sides, read from inside each namespace.
    fn counters(&self, a: &mut Attached, traffic: Traffic) -> anyhow::Result<Counters> {
        enter(&self.dut_ns)?;
        let g1 = ethtool_stats("g1")?;
        let counted = self.counted(a, traffic, &g1)?;
        let cpu = cpu_secs(self.dut_thread);
        enter(&self.gen_ns)?;
        let g0 = ethtool_stats("g0")?;
        Ok(Counters {
            g0,
            g1,
            counted,
            cpu,
        })
    }

    fn measure(&mut self, dut: Dut, a: &mut Attached, traffic: Traffic) -> anyhow::Result<Sample> {
        let f = self.prepare(traffic)?;
        enter(&self.gen_ns)?;
        // Warm-up: caches, the FIB cache and, for players, every flow already in the flow table
        // (200,000 frames over 16,384 flows leave none unseen but by a chance of e^-12). As
        // long for floods: the kernel's work after a DUT was swapped in (the previous edge's
        // maps freed, hundreds of MiB) must be over before the timed send, or it falls on the
        // DUT measured first.
        self.generator.send(&f, self.g0, 200_000)?;
        std::thread::sleep(Duration::from_millis(200));
        let before = self.counters(a, traffic)?;
        enter(&self.gen_ns)?;
        // The timed send runs at real-time priority like the DUT's NAPI thread, so that the
        // machine's other work (builds on a shared VM) does not take turns with either.
        if self.realtime {
            policy(0, libc::SCHED_FIFO, 1)?;
        }
        let took = self.generator.send(&f, self.g0, self.frames);
        if self.realtime {
            policy(0, libc::SCHED_OTHER, 0)?;
        }
        let took = took?;
        // Let the DUT empty its ring (at most 256 frames) and the sink its own.
        std::thread::sleep(Duration::from_millis(100));
        let after = self.counters(a, traffic)?;
        let d0 = |k: &str| stat(&after.g0, k).saturating_sub(stat(&before.g0, k));
        let d1 = |k: &str| stat(&after.g1, k).saturating_sub(stat(&before.g1, k));
        Ok(Sample {
            dut,
            traffic,
            round: 0,
            sent: self.frames as u64,
            secs: took.as_secs_f64(),
            accepted: d0("tx_queue_0_xdp_xmit"),
            ring_drops: d0("tx_queue_0_xdp_xmit_errors"),
            seen: d1("rx_queue_0_xdp_packets"),
            counted: after.counted.saturating_sub(before.counted),
            returned: d0("rx_queue_0_xdp_packets"),
            tx_errors: d1("rx_queue_0_xdp_tx_errors"),
            dut_cpu_secs: after.cpu - before.cpu,
        })
    }
}

/// Removes the run's pin directory however the run ends.
struct PinDir(std::path::PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn require_tools() -> anyhow::Result<()> {
    for (tool, arg, package) in [
        ("xdp-filter", "help", "xdp-tools"),
        ("nft", "--version", "nftables"),
        ("ethtool", "--version", "ethtool"),
    ] {
        if Command::new(tool).arg(arg).output().is_err() {
            bail!("{tool} is not installed (Debian package {package}); run scripts/setup.sh");
        }
    }
    Ok(())
}

/// Runs the throughput benchmark: builds the namespaces, measures every DUT `rounds` times in a
/// rotating order, and removes everything again (namespaces, pins, xdp-filter, nft table), also
/// on error.
pub fn run(opts: Options) -> anyhow::Result<Report> {
    require_tools()?;
    crate::lab::netns::remove_leftovers();
    let gen_ns = Netns::new("tgen")?;
    let dut_ns = Netns::new("tdut")?;
    // No IPv6 on the pair: its neighbour discovery would add frames of its own to the counts,
    // which are otherwise exact (every frame sent is taken by the DUT or dropped by the ring).
    for ns in [&gen_ns, &dut_ns] {
        ns.exec(&["sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"])?;
    }
    veth(&gen_ns, "g0", &dut_ns, "g1")?;
    let pins = PinDir(std::path::PathBuf::from(format!(
        "/sys/fs/bpf/anypop-tput-{}",
        std::process::id()
    )));
    let (gen_name, dut_name, pin_path) = (gen_ns.name.clone(), dut_ns.name.clone(), pins.0.clone());
    // One worker thread moves between the two namespaces with setns; the main thread stays where
    // it is, and the namespaces (with veth, attachments, nft table) go when `gen_ns` / `dut_ns`
    // drop, whatever the worker returned.
    let report = std::thread::spawn(move || worker(opts, gen_name, dut_name, pin_path))
        .join()
        .map_err(|_| anyhow!("the benchmark thread panicked"))?;
    drop(pins);
    drop(gen_ns);
    drop(dut_ns);
    report
}

fn worker(
    opts: Options,
    gen_ns: String,
    dut_ns: String,
    pins: std::path::PathBuf,
) -> anyhow::Result<Report> {
    let ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let cpus = (ncpu >= 2).then_some((0, ncpu - 1));

    enter(&gen_ns)?;
    let g0 = crate::sys::iface::ifindex("g0", "generator")?;
    let g0_mac = crate::sys::iface::mac_of("g0")?;
    run_cmd(&["ethtool", "-K", "g0", "gro", "on"])?;
    // The sink for forwarded frames; it also keeps g0's NAPI running.
    let mut sink = Baseline::load()?;
    sink.attach("base_drop", "g0")?;
    let sink_thread = threaded_napi(&gen_ns, "g0")?;

    enter(&dut_ns)?;
    let g1_mac = crate::sys::iface::mac_of("g1")?;
    for cmd in [
        &["ip", "addr", "add", "10.1.0.1/16", "dev", "g1"][..],
        &["sysctl", "-q", "-w", "net.ipv4.conf.all.forwarding=1"],
        &["sysctl", "-q", "-w", "net.ipv4.conf.g1.forwarding=1"],
        &["ethtool", "-K", "g1", "gro", "on"],
    ] {
        run_cmd(cmd)?;
    }
    let mac = g0_mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    run_cmd(&[
        "ip",
        "neigh",
        "replace",
        BACKEND,
        "lladdr",
        &mac,
        "dev",
        "g1",
        "nud",
        "permanent",
    ])?;
    let dut_thread = threaded_napi(&dut_ns, "g1")?;
    // The sink shares the generator's CPU but preempts it (SCHED_FIFO 2 over the generator's
    // 1): forwarded frames are taken from g0's ring as they arrive, and the time that takes comes
    // out of the offered rate, not out of the DUT's core.
    let cpus = match (cpus, opts.one_cpu) {
        (Some((gen_cpu, _)), true) => Some((gen_cpu, gen_cpu)),
        (c, _) => c,
    };
    let _spinner = match cpus {
        Some((gen_cpu, dut_cpu)) => {
            pin(0, gen_cpu)?;
            pin(sink_thread, gen_cpu)?;
            policy(sink_thread, libc::SCHED_FIFO, 2)?;
            pin(dut_thread, dut_cpu)?;
            // On its own CPU the DUT needs only to stay ahead of other work; on the generator's,
            // it must also preempt the generator (1) and the sink (2) as each batch arrives.
            policy(
                dut_thread,
                libc::SCHED_FIFO,
                if opts.one_cpu { 3 } else { 1 },
            )?;
            Some(Spinner::start(dut_cpu))
        }
        None => None,
    };

    let net = config::parse(NETWORK, "throughput.toml", std::path::Path::new("."))?;
    let mut bench = Bench {
        gen_ns,
        dut_ns,
        pins,
        net,
        generator: TrafficGen::load()?,
        g0,
        dut_thread,
        realtime: cpus.is_some(),
        flood: frame(g0_mac, g1_mac, FLOOD_SOURCE),
        player: frame(g0_mac, g1_mac, [100, 64, 0, 1]),
        frames: opts.frames,
    };
    let duts: &[Dut] = if opts.forward_only {
        &[Dut::Edge, Dut::BareTx]
    } else {
        &[
            Dut::BareDrop,
            Dut::BareDropRead,
            Dut::Edge,
            Dut::XdpFilter,
            Dut::Nftables,
            Dut::NftRaw,
            Dut::BareTx,
        ]
    };
    let mut samples = Vec::new();
    for round in 0..opts.rounds.max(1) {
        let t0 = Instant::now();
        for i in 0..duts.len() {
            let dut = duts[(i + round as usize) % duts.len()];
            let mut a = bench.attach(dut)?;
            let mut result = Ok(());
            for &t in dut.traffic() {
                if opts.forward_only && !t.forward() {
                    continue;
                }
                match bench.measure(dut, &mut a, t) {
                    Ok(s) => samples.push(Sample { round, ..s }),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            bench.detach(a)?;
            result?;
        }
        eprintln!(
            "  round {}/{} ({:.1} s)",
            round + 1,
            opts.rounds.max(1),
            t0.elapsed().as_secs_f64()
        );
    }
    drop(sink);
    Ok(Report { samples, cpus })
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

impl Report {
    fn of(&self, dut: Dut, traffic: Traffic) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.dut == dut && s.traffic == traffic)
            .collect()
    }

    /// Median of a figure over the rounds.
    pub fn median(&self, dut: Dut, traffic: Traffic, f: impl Fn(&Sample) -> f64) -> f64 {
        median(self.of(dut, traffic).into_iter().map(f).collect())
    }

    /// A Markdown table: one row per (DUT, traffic), medians over the rounds and the best round.
    pub fn table(&self) -> String {
        let mut s = String::new();
        s.push_str("| DUT on g1 | traffic | offered Mpps | DUT Mpps (median) | DUT Mpps (best) | Mpps per DUT core-second (median) | veth ring drops | DUT counted / took |\n|---|---|---:|---:|---:|---:|---:|---|\n");
        let mut seen: Vec<(Dut, Traffic)> = Vec::new();
        for x in &self.samples {
            if seen.contains(&(x.dut, x.traffic)) {
                continue;
            }
            seen.push((x.dut, x.traffic));
            let v = self.of(x.dut, x.traffic);
            let sent: u64 = v.iter().map(|s| s.sent).sum();
            let drops: u64 = v.iter().map(|s| s.ring_drops).sum();
            let took: u64 = v.iter().map(|s| s.seen).sum();
            let counted: u64 = v.iter().map(|s| s.counted).sum();
            let mpps: Vec<f64> = v.iter().map(|s| s.mpps()).collect();
            let mut extra = String::new();
            if x.traffic.forward() {
                let returned: u64 = v.iter().map(|s| s.returned).sum();
                let tx_err: u64 = v.iter().map(|s| s.tx_errors).sum();
                let _ = write!(extra, "; back on g0 {returned}, g0 ring full {tx_err}");
            }
            let _ = writeln!(
                s,
                "| {} | {} | {:.2} | **{:.2}** | {:.2} | {:.2} | {:.1} % | {counted} / {took}{extra} |",
                x.dut.label(),
                x.traffic.label(),
                self.median(x.dut, x.traffic, Sample::offered_mpps),
                median(mpps.clone()),
                best(&mpps),
                self.median(x.dut, x.traffic, Sample::per_core_mpps),
                100.0 * drops as f64 / sent.max(1) as f64,
            );
        }
        s
    }

    /// issue 4's targets, each compared round by round: the DUT and its baseline measured in the
    /// same round (seconds apart) make one ratio, and the median of those ratios is the figure.
    /// Pairing by round keeps a slow change of the shared machine's speed (other VMs on the
    /// host) out of the ratio, which a ratio of medians taken across rounds would not.
    pub fn ratios(&self) -> Vec<Ratio> {
        let mut out = Vec::new();
        // The edge's flood drop against every drop baseline, with each flood the baseline ran.
        let mut pairs = Vec::new();
        for (baseline, name, target) in [
            (Dut::BareDrop, "bare XDP_DROP", 0.9),
            (Dut::BareDropRead, "bare XDP_DROP reading the frame", 0.9),
            (Dut::XdpFilter, "xdp-filter", 1.0),
            (Dut::Nftables, "nftables", 5.0),
            (Dut::NftRaw, "nftables ip prerouting raw", 5.0),
        ] {
            for &t in baseline.traffic() {
                let sources = if t == Traffic::FloodFixed {
                    "1 source"
                } else {
                    "random sources"
                };
                pairs.push((
                    format!("flood drop vs {name} ({sources})"),
                    (Dut::Edge, t),
                    (baseline, t),
                    target,
                ));
            }
        }
        pairs.push((
            "forward vs bare XDP_TX".to_owned(),
            (Dut::Edge, Traffic::Players),
            (Dut::BareTx, Traffic::Players),
            0.6,
        ));
        for (what, a, b, target) in pairs {
            let mut wall = Vec::new();
            let mut core = Vec::new();
            for x in self.of(a.0, a.1) {
                let Some(y) = self.of(b.0, b.1).into_iter().find(|y| y.round == x.round) else {
                    continue;
                };
                if y.mpps() > 0.0 && y.per_core_mpps() > 0.0 {
                    wall.push(x.mpps() / y.mpps());
                    core.push(x.per_core_mpps() / y.per_core_mpps());
                }
            }
            if core.is_empty() {
                continue;
            }
            let lowest = core.iter().copied().fold(f64::INFINITY, f64::min);
            out.push(Ratio {
                what,
                wall: median(wall),
                core_lowest: lowest,
                core_highest: best(&core),
                core: median(core),
                target,
            });
        }
        out
    }

    /// The targets table, in Markdown.
    pub fn ratio_table(&self) -> String {
        let mut s = String::from(
            "| target (issue 4) | ratio, DUT Mpps | ratio, per DUT core-second | per core-second, rounds' range | met? |\n|---|---:|---:|---:|---|\n",
        );
        for Ratio {
            what,
            wall,
            core,
            core_lowest,
            core_highest,
            target,
        } in self.ratios()
        {
            // Both ratios are upper bounds when the baseline was not saturated (its wall figure
            // is then the generator's rate, its per-core figure carries a wake-up per batch), so
            // one ratio under the target is enough to say no.
            let met = match (wall >= target, core >= target) {
                (true, true) => "yes",
                (false, false) => "**no**",
                _ => "**no** (one measure only, an upper bound)",
            };
            let _ = writeln!(
                s,
                "| {what} ≥ {target}× | {wall:.2}× | {core:.2}× | {core_lowest:.2}–{core_highest:.2}× | {met} |"
            );
        }
        s
    }

    /// Where the threads ran.
    pub fn placement(&self) -> String {
        match self.cpus {
            Some((g, d)) if g == d => format!(
                "generator, g0's NAPI (sink) and g1's NAPI thread (the DUT, highest real-time priority: it takes each batch as it is flushed) all on CPU {g}; per-core figures count the DUT thread's own CPU time"
            ),
            Some((g, d)) => format!(
                "generator and g0's NAPI (sink) pinned to CPU {g}; g1's NAPI thread (the DUT) pinned to CPU {d}"
            ),
            None => "one CPU: generator and DUT share it (figures are their combined cost)".into(),
        }
    }
}
