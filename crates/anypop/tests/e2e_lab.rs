//! End-to-end in the anycast lab: two POPs behind a router with equal-cost routes to the VIP, two
//! backends with game servers, players and an attacker, every node running the real
//! `anypop run`. What players rely on: they keep playing through a flood, through a route flap
//! between POPs, through a backend drain, and a greedy source is limited without hurting them.
//! Bounded in time; no assertion on timings.
use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anypop::{
    dataplane::trafficgen::FloodKind,
    lab::{
        topology::{Lab, Topology, network_file},
        traffic::{Players, RunningFlood, Servers},
    },
    telemetry::Snapshot,
};
use anypop_common::verdict::Reason;

/// One lab at a time: two labs on two cores would measure each other's load, not ours (players'
/// loss is asserted).
static ONE_LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds [`ONE_LAB`] for as long as the test's lab lives.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_LAB.lock().unwrap_or_else(|e| e.into_inner())
}

fn lab() -> Lab {
    assert_eq!(unsafe { libc::geteuid() }, 0, "run as root");
    Lab::build(
        Topology::default(),
        std::path::Path::new(env!("CARGO_BIN_EXE_anypop")),
        &|_| {},
    )
    .expect("the lab builds")
}

fn sleep(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn count(lab: &Lab, node: &str, r: Reason) -> u64 {
    lab.verdicts(node).unwrap().get(r).packets
}

fn total(snaps: &[Snapshot], r: Reason) -> u64 {
    snaps.iter().map(|s| s.get(r).packets).sum()
}

fn pops(lab: &Lab) -> Vec<Snapshot> {
    (1..=lab.topology.pops)
        .map(|i| lab.verdicts(&format!("pop-{i}")).unwrap())
        .collect()
}

fn loss(sent: u64, got: u64) -> f64 {
    100.0 * sent.saturating_sub(got) as f64 / sent.max(1) as f64
}

#[test]
fn players_keep_playing_through_a_flood_and_every_flood_frame_is_counted() {
    let _serial = serial();
    let lab = lab();
    let servers = Servers::start(&lab).unwrap();
    let before = pops(&lab);
    let players = Players::start(&lab, 0, 8, 64).unwrap();
    // 60,000 frames into each POP from random sources of the blocklisted range, paced so the two
    // cores also run the players.
    let flood = RunningFlood::start(&lab, FloodKind::Udp, 60_000, Some(60_000)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !flood.finished() && Instant::now() < deadline {
        sleep(100);
    }
    let (sent, veth_dropped) = flood.stop(&lab).unwrap();
    sleep(500);
    let stats = players.stop().unwrap();
    let after = pops(&lab);
    let unwanted = servers.unwanted();
    servers.stop().unwrap();

    assert_eq!(sent, 120_000, "the generator sent what it was asked");
    let dropped = total(&after, Reason::DropRule) - total(&before, Reason::DropRule);
    assert_eq!(
        dropped + veth_dropped,
        sent,
        "every flood frame is dropped by the blocklist at a POP (or by the veth before it)"
    );
    assert!(dropped > sent / 2, "most of the flood reached the POPs");
    assert_eq!(unwanted, 0, "no flood packet reached a game server");
    let (s, g): (u64, u64) = stats.iter().fold((0, 0), |(s, g), p| {
        (
            s + p.sent.load(Ordering::Relaxed),
            g + p.got.load(Ordering::Relaxed),
        )
    });
    assert!(s > 8 * 64, "players played: {s} ticks");
    assert!(
        loss(s, g) < 1.0,
        "players lost {:.2}% ({g}/{s})",
        loss(s, g)
    );
    let fwd = total(&after, Reason::FwdIpip) - total(&before, Reason::FwdIpip);
    assert!(
        fwd >= g,
        "every echoed tick was forwarded by a POP ({fwd} < {g})"
    );
}

#[test]
fn tcp_sessions_survive_a_flood_and_a_route_flap() {
    let _serial = serial();
    let lab = lab();
    let servers = Servers::start(&lab).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut sessions = Vec::new();
    for i in 20..24 {
        sessions.push(
            anypop::lab::game::spawn_tcp_player(
                &lab.players,
                anypop::lab::topology::player_addr(i),
                std::net::SocketAddrV4::new(
                    anypop::lab::topology::VIP,
                    anypop::lab::topology::TCP_PORT,
                ),
                20,
                std::sync::Arc::clone(&stop),
            )
            .unwrap(),
        );
    }
    let flood = RunningFlood::start(&lab, FloodKind::TcpSyn, 40_000, None).unwrap();
    sleep(1500);
    lab.route_via(&[2]).unwrap();
    sleep(1500);
    lab.route_via(&[1]).unwrap();
    sleep(1500);
    let (sent, _) = flood.stop(&lab).unwrap();
    stop.store(true, Ordering::Relaxed);
    for (s, h) in sessions {
        h.join().unwrap().unwrap();
        assert!(
            !s.broken.load(Ordering::Relaxed),
            "a TCP session broke ({} of {} lines echoed)",
            s.echoed.load(Ordering::Relaxed),
            s.sent.load(Ordering::Relaxed)
        );
        assert!(s.echoed.load(Ordering::Relaxed) >= 40, "{s:?}");
    }
    assert!(sent > 0);
    assert!(
        count(&lab, "pop-1", Reason::DropRule) + count(&lab, "pop-2", Reason::DropRule) > 0,
        "the SYN flood hit the blocklist"
    );
    assert_eq!(servers.unwanted(), 0);
    servers.stop().unwrap();
}

/// A player's upload in full-size TCP segments (1500-byte packets: too big to tunnel over the
/// lab's 1500-byte links) completes: the POP answers the first ones with ICMP "fragmentation
/// needed", the player's TCP lowers its segment size to fit the tunnel, and the data reaches the
/// game server (which echoes it back directly). Without that answer the session would stall.
#[test]
fn a_player_uploading_full_size_tcp_segments_learns_the_tunnel_mtu() {
    let _serial = serial();
    let lab = lab();
    let servers = Servers::start(&lab).unwrap();
    let answered_before =
        count(&lab, "pop-1", Reason::DropMtuIcmp) + count(&lab, "pop-2", Reason::DropMtuIcmp);
    let took = anypop::lab::game::tcp_upload(
        &lab.players,
        anypop::lab::topology::player_addr(30),
        std::net::SocketAddrV4::new(anypop::lab::topology::VIP, anypop::lab::topology::TCP_PORT),
        256 * 1024,
        Duration::from_secs(15),
    )
    .unwrap();
    eprintln!("256 KiB uploaded and echoed in {took:?}");
    let answered = count(&lab, "pop-1", Reason::DropMtuIcmp)
        + count(&lab, "pop-2", Reason::DropMtuIcmp)
        - answered_before;
    assert!(
        answered >= 1,
        "the full-size segments were answered with ICMP fragmentation needed"
    );
    assert_eq!(servers.unwanted(), 0);
    servers.stop().unwrap();
}

#[test]
fn a_route_flap_between_pops_keeps_every_player_on_its_backend() {
    let _serial = serial();
    let lab = lab();
    let servers = Servers::start(&lab).unwrap();
    // Everyone through POP 1 first, so the flap certainly moves every player.
    lab.route_via(&[1]).unwrap();
    let players = Players::start(&lab, 0, 12, 64).unwrap();
    sleep(1500);
    let backends: Vec<u8> = players
        .stats
        .iter()
        .map(|p| p.backend.load(Ordering::Relaxed))
        .collect();
    assert!(
        backends.iter().all(|&b| b != 0),
        "every player has a backend: {backends:?}"
    );
    assert!(
        backends.contains(&1) && backends.contains(&2),
        "Maglev spreads players: {backends:?}"
    );
    // The flap: POP 1 withdraws the VIP; every player now reaches POP 2, which never saw them.
    let got_before: Vec<u64> = players
        .stats
        .iter()
        .map(|p| p.got.load(Ordering::Relaxed))
        .collect();
    lab.route_via(&[2]).unwrap();
    sleep(300);
    let pop1_at_flap = count(&lab, "pop-1", Reason::FwdIpip);
    let pop2_at_flap = count(&lab, "pop-2", Reason::FwdIpip);
    sleep(1500);
    assert_eq!(
        count(&lab, "pop-1", Reason::FwdIpip),
        pop1_at_flap,
        "POP 1 carries nobody after the flap"
    );
    assert!(
        count(&lab, "pop-2", Reason::FwdIpip) > pop2_at_flap + 12 * 64,
        "POP 2 carries every player"
    );
    let (sent, got, changes) = (players.sent(), players.got(), players.backend_changes());
    for (i, p) in players.stats.iter().enumerate() {
        assert_eq!(
            p.backend.load(Ordering::Relaxed),
            backends[i],
            "player {i} moved to another backend"
        );
        assert!(
            p.got.load(Ordering::Relaxed) > got_before[i] + 64,
            "player {i} kept playing after the flap"
        );
    }
    assert_eq!(changes, 0, "no player ever changed backend");
    players.stop().unwrap();
    assert!(loss(sent, got) < 1.0, "loss {:.2}%", loss(sent, got));
    servers.stop().unwrap();
}

#[test]
fn a_drained_backend_keeps_its_players_and_new_ones_go_elsewhere() {
    let _serial = serial();
    let lab = lab();
    let servers = Servers::start(&lab).unwrap();
    let players = Players::start(&lab, 0, 12, 64).unwrap();
    sleep(1500);
    let on = |p: &Players, b: u8| -> Vec<usize> {
        p.stats
            .iter()
            .enumerate()
            .filter(|(_, s)| s.backend.load(Ordering::Relaxed) == b)
            .map(|(i, _)| i)
            .collect()
    };
    let on_be2 = on(&players, 2);
    assert!(!on_be2.is_empty(), "some players start on be-2");
    let network = network_file(&lab.topology).replace(
        "backends = [\"be-1\", \"be-2\"]\nlimit",
        "backends = [\"be-1\", \"be-2\"]\nweights = { \"be-2\" = 0 }\nlimit",
    );
    assert!(network.contains("weights"), "the drain is in the file");
    lab.apply(&network).expect("the drain applies live");
    let got_at_drain: Vec<u64> = players
        .stats
        .iter()
        .map(|p| p.got.load(Ordering::Relaxed))
        .collect();
    // New players after the drain.
    let newcomers = Players::start(&lab, 12, 12, 64).unwrap();
    sleep(1500);
    assert_eq!(
        on(&players, 2),
        on_be2,
        "existing players stay on the drained backend"
    );
    for &i in &on_be2 {
        assert!(
            players.stats[i].got.load(Ordering::Relaxed) > got_at_drain[i] + 64,
            "player {i} keeps playing on be-2"
        );
    }
    assert_eq!(players.backend_changes(), 0);
    let new_on: Vec<u8> = newcomers
        .stats
        .iter()
        .map(|p| p.backend.load(Ordering::Relaxed))
        .collect();
    assert!(
        new_on.iter().all(|&b| b == 1),
        "new players go to be-1 only: {new_on:?}"
    );
    let (sent, got) = (
        players.sent() + newcomers.sent(),
        players.got() + newcomers.got(),
    );
    players.stop().unwrap();
    newcomers.stop().unwrap();
    assert!(loss(sent, got) < 1.0, "loss {:.2}%", loss(sent, got));
    servers.stop().unwrap();
}

#[test]
fn a_source_above_its_limit_is_limited_then_blocked_for_the_block_time_and_others_are_not() {
    let _serial = serial();
    // The lab's game service: 200 packets/s per source, 1 s burst, 3 s block.
    let lab = lab();
    let servers = Servers::start(&lab).unwrap();
    let players = Players::start(&lab, 0, 6, 64).unwrap();
    let greedy = Players::start(&lab, 6, 1, 1000).unwrap();
    let g = &greedy.stats[0];
    let before = pops(&lab);
    sleep(1000);
    // Over its limit: limited, and from its first violation blocked.
    let (s1, g1) = (
        g.sent.load(Ordering::Relaxed),
        g.got.load(Ordering::Relaxed),
    );
    assert!(s1 > 600, "the greedy source sent {s1}");
    assert!(
        g1 < s1 / 2,
        "the greedy source is limited: {g1} of {s1} answered"
    );
    // It slows to a legal rate at once, but stays blocked until the block time is over.
    g.tick_rate.store(20, Ordering::Relaxed);
    sleep(300);
    let got_blocked_start = g.got.load(Ordering::Relaxed);
    let sent_blocked_start = g.sent.load(Ordering::Relaxed);
    sleep(1300);
    assert!(
        g.sent.load(Ordering::Relaxed) > sent_blocked_start + 15,
        "it kept sending"
    );
    assert_eq!(
        g.got.load(Ordering::Relaxed),
        got_blocked_start,
        "blocked: nothing answered within the block time"
    );
    // The block was set by its first violation, within its first second: 3 s later it is over.
    sleep(1800);
    let (s3, g3) = (
        g.sent.load(Ordering::Relaxed),
        g.got.load(Ordering::Relaxed),
    );
    sleep(1500);
    let (s4, g4) = (
        g.sent.load(Ordering::Relaxed),
        g.got.load(Ordering::Relaxed),
    );
    assert!(
        g4 - g3 + 2 >= s4 - s3,
        "after the block time a legal rate passes again: {} of {}",
        g4 - g3,
        s4 - s3
    );
    let after = pops(&lab);
    assert!(total(&after, Reason::DropRateLimit) > total(&before, Reason::DropRateLimit));
    assert!(total(&after, Reason::DropBlocked) > total(&before, Reason::DropBlocked));
    let (sent, got) = (players.sent(), players.got());
    players.stop().unwrap();
    greedy.stop().unwrap();
    assert!(
        loss(sent, got) < 1.0,
        "other players are not limited: loss {:.2}%",
        loss(sent, got)
    );
    servers.stop().unwrap();
}

#[test]
fn live_applies_under_traffic_lose_no_packet() {
    let _serial = serial();
    let lab = lab();
    // 20,000 frames into each POP at 10,000/s in all, while the POPs switch config 20 times.
    let r = anypop::lab::loadtest::apply_under_load(&lab, 20, 20_000, 10_000).unwrap();
    eprintln!("{r:?}");
    assert_eq!(r.applies, 20);
    assert_eq!(r.sent, 40_000);
    assert_eq!(
        r.dropped_deliberately, 0,
        "the traffic matches no rule and no limit: {r:?}"
    );
    assert_eq!(
        r.forwarded + r.veth_dropped,
        r.sent,
        "every frame was forwarded across the switches: {r:?}"
    );
    assert!(
        r.other_reasons
            .iter()
            .all(|(reason, _)| matches!(reason, Reason::PassNotVip | Reason::PassNotIp)),
        "besides, only the POPs' own background traffic (next-hop probes and their answers): {r:?}"
    );
    // Every forwarded frame was well-formed and routable: the router and the backends took it.
    assert!(
        r.malformed_in_transit().is_empty(),
        "no forwarded frame was malformed or misaddressed: {r:?}"
    );
    assert!(
        r.backend_other.iter().all(|(reason, _)| !reason.is_drop()),
        "the backends dropped nothing that reached them: {r:?}"
    );
    // The backends got every forwarded frame, except what a transit kernel (the lab's router
    // or a veth ring, on a busy two-core machine) visibly dropped for lack of room.
    assert!(r.received <= r.forwarded, "{r:?}");
    assert!(
        r.lost_in_transit() <= r.transit_out_of_room(),
        "the backends got every forwarded frame that no transit queue dropped: {r:?}"
    );
}

#[test]
fn restarting_every_daemon_under_traffic_loses_no_packet_and_moves_no_player() {
    let _serial = serial();
    let mut lab = lab();
    let servers = Servers::start(&lab).unwrap();
    let players = Players::start(&lab, 0, 8, 64).unwrap();
    sleep(1000);
    let backends: Vec<u8> = players
        .stats
        .iter()
        .map(|p| p.backend.load(Ordering::Relaxed))
        .collect();
    let pops_before = pops(&lab);
    let ticks_before = players.sent();
    let flood = RunningFlood::start_from(
        &lab,
        FloodKind::Udp,
        "100.100.0.0/22".parse().unwrap(),
        false,
        2_000,
        None,
    )
    .unwrap();
    // Every daemon stops (its data plane keeps running, pinned) and a new one adopts it,
    // replacing the programs in place: what an upgrade to a new anypop does.
    for node in ["pop-1", "pop-2", "be-1", "be-2"] {
        lab.restart_daemon(node).unwrap();
        sleep(300);
    }
    let (sent, veth_dropped) = flood.stop(&lab).unwrap();
    sleep(500);
    let pops_after = pops(&lab);
    let ticks = players.sent() - ticks_before;
    let forwarded = total(&pops_after, Reason::FwdIpip) - total(&pops_before, Reason::FwdIpip);
    let (psent, pgot) = (players.sent(), players.got());
    let changes = players.backend_changes();
    for (i, p) in players.stats.iter().enumerate() {
        assert_eq!(
            p.backend.load(Ordering::Relaxed),
            backends[i],
            "player {i} moved"
        );
    }
    players.stop().unwrap();
    servers.stop().unwrap();
    assert!(sent > 2_000, "traffic ran through the restarts: {sent}");
    // The POPs forwarded every generated frame and every player tick across four restarts
    // (a tick or two per player may straddle the two counter readings).
    assert!(
        forwarded + 16 >= sent - veth_dropped + ticks,
        "frames lost across restarts: sent {sent} (veth dropped {veth_dropped}) + {ticks} ticks, forwarded {forwarded}"
    );
    // (drop_no_service is not here: the router's ICMP errors about the generator's unroutable
    // sources go to the VIP, which has no ICMP service.)
    for r in [Reason::DropNoRoute, Reason::DropNoBackend, Reason::DropMtu] {
        assert_eq!(
            total(&pops_after, r),
            total(&pops_before, r),
            "{r:?} during restarts"
        );
    }
    assert_eq!(changes, 0, "no player changed backend");
    // Nothing lost but what may still be in flight at the last reading. (The generator is
    // paced gently here: its bursts, redirected by the POPs into the router's 256-frame veth
    // rings, would otherwise overflow them while a restarting daemon's verifier keeps a CPU
    // busy: a property of the lab, not of the restart.)
    assert!(
        pgot + 2 >= psent,
        "players lost {} of {psent} ticks across the restarts",
        psent - pgot
    );
}

#[test]
fn status_shows_attach_mode_program_cost_top_services_and_state_fill() {
    let _serial = serial();
    let lab = lab();
    let servers = Servers::start(&lab).unwrap();
    let players = Players::start(&lab, 0, 6, 64).unwrap();
    let flood = RunningFlood::start(&lab, FloodKind::Udp, 20_000, None).unwrap();
    sleep(500);
    let out = lab.pops[0]
        .command(env!("CARGO_BIN_EXE_anypop"))
        .unwrap()
        .args(["status", "--node", "pop-1", "--window", "1", "--config"])
        .arg(&lab.network_path)
        .arg("--pin-root")
        .arg(&lab.pin_root)
        .output()
        .unwrap();
    flood.stop(&lab).unwrap();
    players.stop().unwrap();
    servers.stop().unwrap();
    let t =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{t}");
    for want in [
        "daemon: running",
        "(hash of the network file), switch #1",
        "interface pop1-in: native XDP, program edge",
        "interface pop1-tr: native XDP, program edge",
        "ns/packet",
        "drop_rule",
        "fwd_ipip",
        "top services",
        "top rules",
        "blocklist",
        "state: flows",
    ] {
        assert!(t.contains(want), "status lacks {want:?}:\n{t}");
    }
    assert!(!t.contains("PROBLEM"), "{t}");
    eprintln!("{t}");
}
