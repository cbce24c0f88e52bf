//! Measurement: the run's fixed state ([`Bench`]), one timed send with the counters read on both
//! sides before and after it, and the rounds that measure every DUT in a rotating order.
use std::{
    collections::HashMap,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use super::{
    Dut, Options, Sample, Traffic,
    duts::Attached,
    sched::{cpu_secs, enter, policy},
    setup::FLOOD_SOURCE,
};
use crate::{config, dataplane::trafficgen::TrafficGen, lab::netns::run_cmd};

/// veth's per-queue statistics (`ethtool -S`) of an interface in the calling thread's namespace.
pub(super) fn ethtool_stats(ifname: &str) -> anyhow::Result<HashMap<String, u64>> {
    let out = run_cmd(&["ethtool", "-S", ifname])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_owned(), v.trim().parse().ok()?))
        })
        .collect())
}

pub(super) fn stat(m: &HashMap<String, u64>, k: &str) -> u64 {
    m.get(k).copied().unwrap_or(0)
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
pub(super) struct Bench {
    pub(super) gen_ns: String,
    pub(super) dut_ns: String,
    pub(super) pins: std::path::PathBuf,
    pub(super) net: config::Network,
    pub(super) generator: TrafficGen,
    pub(super) g0: u32,
    pub(super) dut_thread: i32,
    /// Two CPUs or more: generator and DUT run at real-time priority, each on its own CPU.
    pub(super) realtime: bool,
    pub(super) flood: Vec<u8>,
    pub(super) player: Vec<u8>,
    pub(super) frames: u32,
}

impl Bench {
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

    pub(super) fn measure(
        &mut self,
        dut: Dut,
        a: &mut Attached,
        traffic: Traffic,
    ) -> anyhow::Result<Sample> {
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

/// Measures every DUT once per round, in an order that rotates by one each round (so no DUT is
/// always measured first, right after the previous one was swapped out).
pub(super) fn rounds(bench: &mut Bench, opts: &Options) -> anyhow::Result<Vec<Sample>> {
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
    Ok(samples)
}
