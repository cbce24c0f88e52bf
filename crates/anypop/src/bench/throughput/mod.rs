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
//! shared machine does not take turns with them (see [`sched::Spinner`] for the DUT's idle CPU).
//!
//! `g1` has GRO switched on: it keeps veth's NAPI (and so the pinned thread) alive while XDP
//! programs are swapped, and it is what lets nftables see frames at all without an XDP program.
use std::process::Command;

use anyhow::{anyhow, bail};

mod duts;
mod measure;
mod report;
mod sched;
mod setup;

use crate::{
    config,
    dataplane::trafficgen::TrafficGen,
    lab::netns::{Netns, veth},
};
use measure::Bench;

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

/// The benchmark thread: sets up both sides of the pair and places their threads, then measures.
fn worker(
    opts: Options,
    gen_ns: String,
    dut_ns: String,
    pins: std::path::PathBuf,
) -> anyhow::Result<Report> {
    let generator = setup::generator_side(&gen_ns)?;
    let (g1_mac, dut_thread) = setup::dut_side(&dut_ns, generator.mac)?;
    let (cpus, _spinner) = setup::place(opts.one_cpu, generator.sink_thread, dut_thread)?;

    let net = config::parse(
        &setup::network(),
        "throughput.toml",
        std::path::Path::new("."),
    )?;
    let mut bench = Bench {
        gen_ns,
        dut_ns,
        pins,
        net,
        generator: TrafficGen::load()?,
        g0: generator.g0,
        dut_thread,
        realtime: cpus.is_some(),
        flood: setup::frame(generator.mac, g1_mac, setup::FLOOD_SOURCE),
        player: setup::frame(generator.mac, g1_mac, [100, 64, 0, 1]),
        frames: opts.frames,
    };
    let samples = measure::rounds(&mut bench, &opts)?;
    drop(generator.sink);
    Ok(Report { samples, cpus })
}
