//! `anypop lab demo`: players keep playing while a flood hits the anycast address and their route
//! flaps from one POP to the other.
//!
//! The lab of [`super::topology`] (two POPs, two backends, players, an attacker) runs the real
//! `anypop run` on every node. The demo then plays four acts over its duration:
//! 1. players only (each a UDP game client at a game's tick rate; one TCP session too);
//! 2. a random-source flood from the attacker's range hits both POPs (our generator);
//! 3. POP 1 withdraws the VIP: the router moves every player to POP 2 (a route flap) — Maglev is
//!    identical on both POPs, so every player stays on its backend;
//! 4. POP 1 comes back (equal-cost routes again); the flood stops at the end.
//!
//! Once a second it shows the flood offered, what each POP does by reason, its XDP mode and the
//! edge program's cost per packet (kernel run-time statistics), the players' loss, RTT and
//! backend changes. It ends with a summary and removes everything.
use std::{
    net::SocketAddrV4,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anypop_common::verdict::Reason;

use super::{
    game::{self, PlayerStats, TcpStats, percentile},
    topology::{ATTACK_RANGE, GAME_PORT, Lab, TCP_PORT, Topology, VIP, player_addr},
    traffic::{Players, RunningFlood, Servers},
};
use crate::{
    dataplane::{links::program_cost, trafficgen::FloodKind},
    telemetry::{self, Snapshot, si},
};

/// Options of the demo.
pub struct DemoOptions {
    pub duration: Duration,
    /// Player packets per second (a game tick rate).
    pub tick_rate: u32,
    /// UDP players.
    pub players: usize,
    /// Flood frames per second in all (split over the POPs); 0: as fast as the generator goes.
    pub flood_pps: u64,
    pub flood_kind: FloodKind,
}

/// One POP's line: mode, cost per packet, verdict rates.
struct PopView {
    prev: Snapshot,
    prev_cost: Option<(u64, u64)>,
}

fn pop_line(lab: &Lab, i: usize, view: &mut PopView, secs: f64) -> anyhow::Result<String> {
    let now = lab.verdicts(&format!("pop-{i}"))?;
    let rates = telemetry::rates(&view.prev, &now, secs);
    view.prev = now;
    let parts: Vec<String> = rates
        .iter()
        .filter(|(_, pps, _)| *pps >= 0.5)
        .map(|(r, pps, _)| format!("{}={}/s", r.name(), si(*pps)))
        .collect();
    let xdp = lab.xdp_of_pop(i, &format!("pop{i}-in"));
    let cost = program_cost(xdp.prog_id);
    // Only over a busy second: a few hundred player packets a second each find the caches
    // cold, and their mean (thousands of ns) says nothing of what a flood costs.
    let ns = match (view.prev_cost, cost) {
        (Some((t0, n0)), Some((t1, n1))) if n1 >= n0 + 1000 => {
            format!("{:>4}", (t1 - t0) / (n1 - n0))
        }
        _ => "   -".into(),
    };
    view.prev_cost = cost;
    Ok(format!(
        "pop-{i} [{}] {ns} ns/pkt {}",
        xdp.mode,
        if parts.is_empty() {
            "idle".into()
        } else {
            parts.join(" ")
        }
    ))
}

/// Runs the demo; returns true when every player got through (under 1% loss, never moved to
/// another backend) and no flood packet reached a game server.
pub fn run(opts: DemoOptions, binary: &Path, stop: Arc<AtomicBool>) -> anyhow::Result<bool> {
    let topology = Topology::default();
    let lab = start_lab(topology, binary)?;
    let servers = Servers::start(&lab)?;
    let players = Players::start(&lab, 0, opts.players.clamp(1, 24), opts.tick_rate.max(1))?;
    let tcp_stop = Arc::new(AtomicBool::new(false));
    let (tcp, tcp_thread): (Arc<TcpStats>, _) = game::spawn_tcp_player(
        &lab.players,
        player_addr(31),
        SocketAddrV4::new(VIP, TCP_PORT),
        10,
        Arc::clone(&tcp_stop),
    )?;
    // Run-time statistics on while we watch (they cost a little on every packet).
    let _stats = crate::dataplane::edge::enable_cost_stats()?;

    let acts = Acts::new(opts.duration);
    let views: Vec<PopView> = (1..=topology.pops)
        .map(|i| {
            Ok(PopView {
                prev: lab.verdicts(&format!("pop-{i}"))?,
                prev_cost: None,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let start_totals: Vec<Snapshot> = views.iter().map(|v| v.prev.clone()).collect();
    let mut watch = Watch {
        prev: (0, 0, 0),
        views,
    };
    let flood_sent_total = play(&lab, &opts, &acts, &players, &tcp, &stop, &mut watch)?;
    tcp_stop.store(true, Ordering::Relaxed);
    let _ = tcp_thread.join();
    let stats = players.stop()?;
    std::thread::sleep(Duration::from_millis(200));
    let unwanted = servers.unwanted();
    servers.stop()?;
    summary(
        &lab,
        &stats,
        &tcp,
        flood_sent_total,
        unwanted,
        &start_totals,
    )
}

/// Builds the lab and says what runs where.
fn start_lab(topology: Topology, binary: &Path) -> anyhow::Result<Lab> {
    let lab = Lab::build(topology, binary, &|s| println!("lab: {s} …"))?;
    println!(
        "lab: up — {} POPs announce {VIP} (equal-cost routes at the router), {} backends with a game server on {VIP}:{GAME_PORT}/udp and :{TCP_PORT}/tcp",
        topology.pops, topology.backends
    );
    for i in 1..=topology.pops {
        println!(
            "lab: pop-{i}: XDP {} on pop{i}-in, {} on pop{i}-tr",
            lab.xdp_of_pop(i, &format!("pop{i}-in")).mode,
            lab.xdp_of_pop(i, &format!("pop{i}-tr")).mode
        );
    }
    Ok(lab)
}

/// The demo's timeline over its duration: when the flood starts, POP 1 withdraws, and returns.
struct Acts {
    duration: Duration,
    flood_at: Duration,
    flap_at: Duration,
    back_at: Duration,
}

impl Acts {
    /// The timeline of a demo of `d`, announced.
    fn new(d: Duration) -> Acts {
        let (flood_at, flap_at, back_at) = (d / 5, d * 2 / 5, d * 7 / 10);
        println!(
            "running {:?}: flood at {:?}, POP 1 withdraws at {:?} (route flap), returns at {:?}; Ctrl-C stops early",
            d, flood_at, flap_at, back_at
        );
        Acts {
            duration: d,
            flood_at,
            flap_at,
            back_at,
        }
    }
}

/// Plays the acts, with a line a second, until the duration is over or `stop` is set; returns
/// what the flood sent (frames, and frames dropped before a POP saw them).
fn play(
    lab: &Lab,
    opts: &DemoOptions,
    acts: &Acts,
    players: &Players,
    tcp: &TcpStats,
    stop: &AtomicBool,
    watch: &mut Watch,
) -> anyhow::Result<(u64, u64)> {
    let topology = lab.topology;
    let mut flood: Option<RunningFlood> = None;
    let mut flood_sent_total = (0u64, 0u64);
    let (mut flapped, mut returned) = (false, false);
    let start = Instant::now();
    let mut last = Instant::now();
    while start.elapsed() < acts.duration && !stop.load(Ordering::Relaxed) {
        let t = start.elapsed();
        if t >= acts.flood_at && flood.is_none() && flood_sent_total == (0, 0) {
            let rate = if opts.flood_pps == 0 {
                "flat out".to_string()
            } else {
                format!("{}/s", si(opts.flood_pps as f64))
            };
            println!(
                ">>> flood on: {:?} from random sources in {ATTACK_RANGE} to {VIP}:{GAME_PORT}, {rate}, into both POPs",
                opts.flood_kind
            );
            flood = Some(RunningFlood::start(
                lab,
                opts.flood_kind,
                opts.flood_pps,
                None,
            )?);
        }
        if t >= acts.flap_at && !flapped {
            println!(
                ">>> route flap: POP 1 withdraws {VIP}; the router sends every player to POP 2"
            );
            lab.route_via(&[2.min(topology.pops)])?;
            flapped = true;
        }
        if t >= acts.back_at && !returned {
            println!(">>> POP 1 announces {VIP} again: equal-cost routes through both POPs");
            lab.route_via(&(1..=topology.pops).collect::<Vec<_>>())?;
            returned = true;
        }
        std::thread::sleep(Duration::from_millis(100));
        if last.elapsed() < Duration::from_secs(1) {
            continue;
        }
        let secs = last.elapsed().as_secs_f64();
        last = Instant::now();
        let line = second_line(lab, start, secs, players, tcp, flood.as_ref(), watch)?;
        println!("{line}");
    }
    if let Some(f) = flood.take() {
        flood_sent_total = f.stop(lab)?;
    }
    Ok(flood_sent_total)
}

/// What the previous line of a second saw, so that the next shows rates.
struct Watch {
    /// Players' ticks sent, echoes got, and flood frames sent.
    prev: (u64, u64, u64),
    /// Each POP's counters.
    views: Vec<PopView>,
}

/// The line of one second: flood rate, players' echoes, loss, RTT, moves, the TCP session, and
/// each POP ([`pop_line`]).
fn second_line(
    lab: &Lab,
    start: Instant,
    secs: f64,
    players: &Players,
    tcp: &TcpStats,
    flood: Option<&RunningFlood>,
    watch: &mut Watch,
) -> anyhow::Result<String> {
    let (last_sent, last_got, last_flood) = watch.prev;
    let (s, g) = (players.sent(), players.got());
    let mut rtts: Vec<u32> = players.stats.iter().flat_map(|p| p.take_rtts()).collect();
    let f = flood.map_or(0, |f| f.sent.load(Ordering::Relaxed));
    let (ds, dg) = (s - last_sent, g - last_got);
    // Echoes trail their ticks by a round trip: a window can show slightly more or less.
    let loss = if ds == 0 {
        0.0
    } else {
        100.0 * ds.saturating_sub(dg) as f64 / ds as f64
    };
    let mut line = format!(
        "t={:>4.1}s flood {:>6}/s | players {dg:>4}/{ds:<4} loss {loss:>4.1}% rtt p50 {:>5} p99 {:>5} µs moves {} tcp {} |",
        start.elapsed().as_secs_f64(),
        si(f.saturating_sub(last_flood) as f64 / secs),
        percentile(&mut rtts, 0.5),
        percentile(&mut rtts, 0.99),
        players.backend_changes(),
        if tcp.broken.load(Ordering::Relaxed) {
            "BROKEN".to_string()
        } else {
            format!("{} echoed", tcp.echoed.load(Ordering::Relaxed))
        }
    );
    for (i, v) in watch.views.iter_mut().enumerate() {
        line += " ";
        line += &pop_line(lab, i + 1, v, secs)?;
        line += " |";
    }
    watch.prev = (s, g, f);
    Ok(line)
}

/// The summary: players, the TCP session, the flood, each POP's verdicts over the demo, and the
/// verdict of the demo itself (returned).
fn summary(
    lab: &Lab,
    stats: &[Arc<PlayerStats>],
    tcp: &TcpStats,
    flood_sent_total: (u64, u64),
    unwanted: u64,
    start_totals: &[Snapshot],
) -> anyhow::Result<bool> {
    let sent: u64 = stats.iter().map(|p| p.sent.load(Ordering::Relaxed)).sum();
    let got: u64 = stats.iter().map(|p| p.got.load(Ordering::Relaxed)).sum();
    let moves: u64 = stats
        .iter()
        .map(|p| p.backend_changes.load(Ordering::Relaxed))
        .sum();
    let mut all: Vec<u32> = stats.iter().flat_map(|p| p.all_rtts()).collect();
    let loss = if sent == 0 {
        100.0
    } else {
        100.0 * sent.saturating_sub(got) as f64 / sent as f64
    };
    println!("\n== summary");
    println!(
        "players: {} UDP players sent {sent} ticks, {got} echoes came back (loss {loss:.2}%), rtt p50 {} µs p99 {} µs; backend changes {moves}",
        stats.len(),
        percentile(&mut all, 0.5),
        percentile(&mut all, 0.99)
    );
    println!(
        "tcp player: {} lines echoed, session {}",
        tcp.echoed.load(Ordering::Relaxed),
        if tcp.broken.load(Ordering::Relaxed) {
            "BROKEN"
        } else {
            "intact"
        }
    );
    println!(
        "flood: {} frames sent ({} dropped by the attacker's veths before a POP saw them); reached a game server: {unwanted}",
        flood_sent_total.0, flood_sent_total.1
    );
    for i in 1..=lab.topology.pops {
        let now = lab.verdicts(&format!("pop-{i}"))?;
        let d: Vec<String> = Reason::ALL
            .iter()
            .filter_map(|&r| {
                let n = now.get(r).packets - start_totals[i - 1].get(r).packets;
                (n > 0).then(|| format!("{}={}", r.name(), n))
            })
            .collect();
        println!("pop-{i}: {}", d.join(" "));
    }
    let ok = loss < 1.0 && moves == 0 && unwanted == 0 && !tcp.broken.load(Ordering::Relaxed);
    println!(
        "{}",
        if ok {
            "players survived the flood and the route flap: the flood died at the POPs, every player stayed on its backend, replies went straight back"
        } else {
            "players did NOT get through cleanly (see above)"
        }
    );
    println!("cleaning up: daemons, namespaces, pins");
    Ok(ok)
}
