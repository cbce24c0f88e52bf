//! `anypop lab load-test`: what players feel with no flood and with the generator's maximum flood
//! hitting the POPs — loss and RTT percentiles of the same players, measured back to back in the
//! same lab — and whether live config applies lose packets under load ([`apply_under_load`]).
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

/// Runs both phases with `players` UDP players at `tick_rate` for `secs` each, then (unless
/// `applies` is 0) [`apply_under_load`]; returns the report in Markdown.
pub fn run(
    binary: &Path,
    players: usize,
    tick_rate: u32,
    secs: u64,
    applies: usize,
) -> anyhow::Result<String> {
    let lab = Lab::build(Topology::default(), binary, &|s| eprintln!("lab: {s} …"))?;
    let servers = Servers::start(&lab)?;
    eprintln!("lab: {players} players, no flood, {secs} s …");
    let quiet = phase(&lab, "no flood", players, tick_rate, secs, false)?;
    eprintln!("lab: {players} players, flood flat out, {secs} s …");
    let flood = phase(&lab, "flood flat out", players, tick_rate, secs, true)?;
    servers.stop()?;
    let mut out = table(&[quiet, flood]);
    if applies > 0 {
        eprintln!("lab: {applies} live applies under legitimate load …");
        let frames = 100_000;
        let r = apply_under_load(&lab, applies, frames, 20_000)?;
        out += &format!(
            "\nlive applies under load: {} config switches on each POP in {:.1} s while {} legitimate frames were sent: {} forwarded, {} dropped by the generator's veths, {} dropped on purpose, {} other verdicts; backends received {} — {}\n",
            r.applies,
            r.seconds,
            r.sent,
            r.forwarded,
            r.veth_dropped,
            r.dropped_deliberately,
            r.other,
            r.received,
            if r.forwarded + r.veth_dropped == r.sent
                && r.received == r.forwarded
                && r.dropped_deliberately == 0
            {
                "no frame lost"
            } else {
                "FRAMES LOST"
            }
        );
    }
    Ok(out)
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

/// What happened to legitimate traffic while the POPs' config was switched again and again.
#[derive(Debug, Default)]
pub struct ApplyUnderLoad {
    pub applies: usize,
    pub seconds: f64,
    /// Frames the generator sent into the POPs.
    pub sent: u64,
    /// Frames the attacker-side veths dropped before a POP saw them.
    pub veth_dropped: u64,
    /// Frames the POPs forwarded to a backend.
    pub forwarded: u64,
    /// Frames the POPs dropped on purpose (rules, limits, caps: none expected here).
    pub dropped_deliberately: u64,
    /// Frames the POPs gave any other verdict.
    pub other: u64,
    /// Those other verdicts by reason.
    pub other_reasons: Vec<(Reason, u64)>,
    /// Frames the backends decapsulated.
    pub received: u64,
    /// Drop and error counters of the transit links (router, POPs, backends) that grew during
    /// the run, by `node/ifname/counter`: where frames were lost between the POPs' programs and
    /// the backends' (a veth whose receiver fell behind, the router's kernel).
    pub transit_dropped: Vec<(String, u64)>,
    /// The backends' verdicts other than decapsulation that grew during the run.
    pub backend_other: Vec<(Reason, u64)>,
}

impl ApplyUnderLoad {
    /// Forwarded frames the backends did not get.
    pub fn lost_in_transit(&self) -> u64 {
        self.forwarded.saturating_sub(self.received)
    }

    /// Frames the transit kernels counted as dropped for lack of room (a veth ring or queue
    /// that was full, a discard under load): never a fault of the frames themselves.
    pub fn transit_out_of_room(&self) -> u64 {
        self.transit_dropped
            .iter()
            .filter(|(k, _)| !Self::is_malformed_counter(k))
            .map(|(_, n)| n)
            .sum()
    }

    /// Transit counters that mean a frame was malformed or misaddressed (bad header, an
    /// address nobody routes): these would be the POPs' fault.
    pub fn malformed_in_transit(&self) -> Vec<&(String, u64)> {
        self.transit_dropped
            .iter()
            .filter(|(k, _)| Self::is_malformed_counter(k))
            .collect()
    }

    fn is_malformed_counter(key: &str) -> bool {
        ["InHdrErrors", "InAddrErrors", "OutNoRoutes"]
            .iter()
            .any(|c| key.ends_with(c))
    }
}

/// Sends `frames` of legitimate traffic (1,024 sources outside every rule, a fixed source port:
/// 1,024 flows, each well under the game's limit) through the POPs at `pps`, while applying
/// `applies` new configs to every POP (alternately the lab's file and one with an extra rule that
/// matches nothing of this traffic). Counts where every frame went.
pub fn apply_under_load(
    lab: &Lab,
    applies: usize,
    frames_per_pop: u64,
    pps: u64,
) -> anyhow::Result<ApplyUnderLoad> {
    let base = super::topology::network_file(&lab.topology);
    let changed = base.clone()
        + "\n[[rule]]\nname = \"extra\"\naction = \"deny\"\nsrc = [\"192.0.2.0/24\"]\n";
    let pops: Vec<String> = (1..=lab.topology.pops)
        .map(|i| format!("pop-{i}"))
        .collect();
    let backends: Vec<String> = (1..=lab.topology.backends)
        .map(|j| format!("be-{j}"))
        .collect();
    let read = |nodes: &[String]| -> anyhow::Result<Vec<crate::telemetry::Snapshot>> {
        nodes.iter().map(|n| lab.verdicts(n)).collect()
    };
    let sum = |s: &[crate::telemetry::Snapshot], r: Reason| -> u64 {
        s.iter().map(|x| x.get(r).packets).sum()
    };
    let all =
        |s: &[crate::telemetry::Snapshot]| -> u64 { Reason::ALL.iter().map(|&r| sum(s, r)).sum() };
    let (p0, b0) = (read(&pops)?, read(&backends)?);
    let links0 = lab.transit_drop_counters();
    let t0 = Instant::now();
    let flood = RunningFlood::start_from(
        lab,
        FloodKind::Udp,
        "100.100.0.0/22".parse()?,
        false,
        pps,
        Some(frames_per_pop),
    )?;
    let mut done = 0;
    while done < applies {
        lab.apply_to(&pops, if done % 2 == 0 { &changed } else { &base })?;
        done += 1;
    }
    while !flood.finished() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (sent, veth_dropped) = flood.stop(lab)?;
    // Let the last frames cross the router: on a busy machine its softirq may lag behind, so
    // wait until the backends have everything the POPs forwarded or their count stops growing.
    let p1 = read(&pops)?;
    let forwarded_total = sum(&p1, Reason::FwdIpip);
    let mut b1 = read(&backends)?;
    let mut still = Instant::now();
    let patience = Instant::now();
    while sum(&b1, Reason::DecapIpip) - sum(&b0, Reason::DecapIpip)
        < forwarded_total - sum(&p0, Reason::FwdIpip)
        && still.elapsed() < Duration::from_secs(1)
        && patience.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(100));
        let now = read(&backends)?;
        if sum(&now, Reason::DecapIpip) != sum(&b1, Reason::DecapIpip) {
            still = Instant::now();
        }
        b1 = now;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let transit_dropped = lab
        .transit_drop_counters()
        .into_iter()
        .filter_map(|(k, v)| {
            let grew = v.saturating_sub(links0.get(&k).copied().unwrap_or(0));
            (grew > 0).then_some((k, grew))
        })
        .collect();
    let delta = |a: &[crate::telemetry::Snapshot], b: &[crate::telemetry::Snapshot], r| {
        sum(b, r) - sum(a, r)
    };
    let deliberate = [
        Reason::DropRule,
        Reason::DropRateLimit,
        Reason::DropBlocked,
        Reason::DropSourceCap,
    ];
    let forwarded = delta(&p0, &p1, Reason::FwdIpip);
    let dropped_deliberately: u64 = deliberate.iter().map(|&r| delta(&p0, &p1, r)).sum();
    Ok(ApplyUnderLoad {
        applies: done,
        seconds,
        sent,
        veth_dropped,
        forwarded,
        dropped_deliberately,
        other: (all(&p1) - all(&p0)).saturating_sub(forwarded + dropped_deliberately),
        other_reasons: Reason::ALL
            .iter()
            .filter(|r| **r != Reason::FwdIpip && !deliberate.contains(r))
            .map(|&r| (r, delta(&p0, &p1, r)))
            .filter(|(_, n)| *n > 0)
            .collect(),
        received: delta(&b0, &b1, Reason::DecapIpip),
        transit_dropped,
        backend_other: Reason::ALL
            .iter()
            .filter(|r| **r != Reason::DecapIpip)
            .map(|&r| (r, delta(&b0, &b1, r)))
            .filter(|(_, n)| *n > 0)
            .collect(),
    })
}
