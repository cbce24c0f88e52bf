//! `anypop lab load-test`: what players feel with no flood and with the generator's maximum flood
//! hitting the POPs — loss and RTT percentiles of the same players, measured back to back in the
//! same lab (issue 4's last benchmark row; figures go to docs/BENCHMARKS.md).
use std::{
    path::Path,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anypop_common::verdict::Reason;

use super::{
    game::percentile,
    topology::{Lab, Topology},
    traffic::{Players, RunningFlood, Servers},
};
use crate::dataplane::trafficgen::FloodKind;

/// One phase's result.
#[derive(Debug)]
pub struct Phase {
    pub name: &'static str,
    pub ticks: u64,
    pub echoes: u64,
    pub loss_pct: f64,
    pub rtt_p50_us: u32,
    pub rtt_p99_us: u32,
    pub rtt_max_us: u32,
    /// Flood frames offered per second (0 without flood).
    pub flood_pps: f64,
    /// Flood frames the POPs dropped by rule per second.
    pub dropped_pps: f64,
}

fn phase(
    lab: &Lab,
    name: &'static str,
    players: usize,
    tick_rate: u32,
    secs: u64,
    flood: bool,
) -> anyhow::Result<Phase> {
    let before: u64 = (1..=lab.topology.pops)
        .map(|i| {
            lab.verdicts(&format!("pop-{i}"))
                .map(|s| s.get(Reason::DropRule).packets)
        })
        .sum::<anyhow::Result<u64>>()?;
    let p = Players::start(lab, 0, players, tick_rate)?;
    let f = if flood {
        Some(RunningFlood::start(lab, FloodKind::Udp, 0, None)?)
    } else {
        None
    };
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let took = t0.elapsed().as_secs_f64();
    let stats = p.stop()?;
    let offered = match f {
        Some(f) => f.stop(lab)?.0,
        None => 0,
    };
    let after: u64 = (1..=lab.topology.pops)
        .map(|i| {
            lab.verdicts(&format!("pop-{i}"))
                .map(|s| s.get(Reason::DropRule).packets)
        })
        .sum::<anyhow::Result<u64>>()?;
    let ticks: u64 = stats.iter().map(|s| s.sent.load(Ordering::Relaxed)).sum();
    let echoes: u64 = stats.iter().map(|s| s.got.load(Ordering::Relaxed)).sum();
    let mut rtts: Vec<u32> = stats.iter().flat_map(|s| s.all_rtts()).collect();
    Ok(Phase {
        name,
        ticks,
        echoes,
        loss_pct: 100.0 * ticks.saturating_sub(echoes) as f64 / ticks.max(1) as f64,
        rtt_p50_us: percentile(&mut rtts, 0.5),
        rtt_p99_us: percentile(&mut rtts, 0.99),
        rtt_max_us: rtts.last().copied().unwrap_or(0),
        flood_pps: offered as f64 / took,
        dropped_pps: (after - before) as f64 / took,
    })
}

/// Runs both phases with `players` UDP players at `tick_rate` for `secs` each.
pub fn run(binary: &Path, players: usize, tick_rate: u32, secs: u64) -> anyhow::Result<Vec<Phase>> {
    let lab = Lab::build(Topology::default(), binary, &|s| eprintln!("lab: {s} …"))?;
    let servers = Servers::start(&lab)?;
    let quiet = phase(&lab, "no flood", players, tick_rate, secs, false)?;
    let flood = phase(&lab, "flood flat out", players, tick_rate, secs, true)?;
    servers.stop()?;
    Ok(vec![quiet, flood])
}

/// The result as a Markdown table.
pub fn table(phases: &[Phase]) -> String {
    let mut s = String::from(
        "| phase | flood offered | dropped at the POPs | player ticks | echoes | loss | RTT p50 | RTT p99 | RTT max |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for p in phases {
        s += &format!(
            "| {} | {:.2} Mpps | {:.2} Mpps | {} | {} | {:.3} % | {} µs | {} µs | {} µs |\n",
            p.name,
            p.flood_pps / 1e6,
            p.dropped_pps / 1e6,
            p.ticks,
            p.echoes,
            p.loss_pct,
            p.rtt_p50_us,
            p.rtt_p99_us,
            p.rtt_max_us
        );
    }
    s
}
