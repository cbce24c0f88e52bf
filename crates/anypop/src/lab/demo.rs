//! `anypop lab demo`: a player keeps playing while a flood hits the anycast address.
//!
//! Topology (every namespace is ours, named `ap-<pid>-…`, and deleted at the end):
//! ```text
//!  client ns                       router ns ("internet")           pop ns
//!  player   100.64.0.2 ─┐          r-c  100.64.0.1 / 198.18.0.1     pop-in 198.51.100.1
//!  attacker 198.18.0.2 ─┴─ c0 ──── r-c   r-pop 198.51.100.2 ──────── (XDP edge)
//!                                        r-be  192.0.2.1 ─────────── be-in 192.0.2.21  backend ns
//!                                                                    (XDP decap, TC dsr, game server on the VIP)
//! ```
//! The router sends the VIP to the POP; the POP drops the flood and tunnels the player to the
//! backend; the backend's game server answers straight back through the router: the POP carries
//! only the inbound half.
use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;

use super::netns::{Netns, remove_leftovers, veth};
use crate::{
    config,
    daemon::{BackendNode, Pop},
    dataplane::baseline::Baseline,
    telemetry,
};
use anypop_common::verdict::Reason;

/// The demo's network file: one POP, one backend, a game service with a per-source limit, a
/// blocklist rule for the attacker's range.
pub const DEMO_NETWORK: &str = r#"
[defaults]
xdp_mode = "auto"

[[service]]
name = "rust-eu"
vip = "203.0.113.10"
protocol = "udp"
ports = "28015-28016"
backends = ["be-1"]
limit = { pps = 300, burst = 2.0, block = "10s" }

[[rule]]
name = "blocklist"
action = "deny"
src = ["198.18.0.0/15"]

[[node]]
name = "pop-1"
role = "pop"
interfaces = ["pop-in"]
tunnel_source = "198.51.100.1"

[[node]]
name = "be-1"
role = "backend"
interface = "be-in"
address = "192.0.2.21"
"#;

const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const PLAYER: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
const ATTACKER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const GAME_PORT: u16 = 28015;

/// Options of the demo.
pub struct DemoOptions {
    pub duration: Duration,
    /// Player packets per second (a game tick rate).
    pub tick_rate: u32,
}

/// Removes the demo's pin directory on every exit path.
struct PinGuard(PathBuf);
impl Drop for PinGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Round-trip times of the player, in microseconds.
#[derive(Default)]
struct Rtts {
    window: Vec<u64>,
    all: Vec<u64>,
}

fn percentile(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Builds the four-namespace topology of the module docs: veths, addresses, routes, sysctls
/// (the end-to-end tests use it too).
pub fn build(client: &Netns, router: &Netns, pop: &Netns, backend: &Netns) -> anyhow::Result<()> {
    veth(client, "c0", router, "r-c")?;
    veth(router, "r-pop", pop, "pop-in")?;
    veth(router, "r-be", backend, "be-in")?;
    // veth leaves TX checksums to hardware that does not exist; once XDP rewrites a frame nobody
    // completes them. Real NICs put complete checksums on the wire, so we do too.
    let plan: [(&Netns, &[&str]); 4] = [
        (
            client,
            &[
                "ip addr add 100.64.0.2/24 dev c0",
                "ip addr add 198.18.0.2/24 dev c0",
                "ip route add default via 100.64.0.1",
                "ethtool -K c0 tx off",
            ],
        ),
        (
            router,
            &[
                "ip addr add 100.64.0.1/24 dev r-c",
                "ip addr add 198.18.0.1/24 dev r-c",
                "ip addr add 198.51.100.2/24 dev r-pop",
                "ip addr add 192.0.2.1/24 dev r-be",
                "ip route add 203.0.113.10/32 via 198.51.100.1",
                "sysctl -q -w net.ipv4.conf.all.forwarding=1",
                "sysctl -q -w net.ipv4.conf.all.rp_filter=0",
                "sysctl -q -w net.ipv4.conf.r-c.rp_filter=0",
                "sysctl -q -w net.ipv4.conf.r-be.rp_filter=0",
                "ethtool -K r-c tx off",
                "ethtool -K r-pop tx off",
                "ethtool -K r-be tx off",
            ],
        ),
        (
            pop,
            &[
                "ip addr add 198.51.100.1/24 dev pop-in",
                "ip route add default via 198.51.100.2",
                "sysctl -q -w net.ipv4.conf.all.forwarding=1",
                "sysctl -q -w net.ipv4.conf.pop-in.forwarding=1",
                "ethtool -K pop-in tx off",
            ],
        ),
        (
            backend,
            &[
                "ip addr add 192.0.2.21/24 dev be-in",
                "ip route add default via 192.0.2.1",
                "sysctl -q -w net.ipv4.conf.all.forwarding=1",
                "sysctl -q -w net.ipv4.conf.be-in.forwarding=1",
                "sysctl -q -w net.ipv4.conf.all.rp_filter=0",
                "sysctl -q -w net.ipv4.conf.be-in.rp_filter=0",
                "ethtool -K be-in tx off",
            ],
        ),
    ];
    for (ns, cmds) in plan {
        for c in cmds {
            ns.exec(&c.split_whitespace().collect::<Vec<_>>())?;
        }
    }
    Ok(())
}

/// Runs the demo; returns true when the player got through (under 1% loss) and no flood packet
/// reached the backend.
pub fn run(opts: DemoOptions, stop: Arc<AtomicBool>) -> anyhow::Result<bool> {
    remove_leftovers();
    println!("building the lab: client, router, pop and backend namespaces …");
    let client = Netns::new("client")?;
    let router = Netns::new("router")?;
    let pop = Netns::new("pop")?;
    let backend = Netns::new("backend")?;
    build(&client, &router, &pop, &backend)?;
    let net = config::parse(DEMO_NETWORK, "demo.toml", std::path::Path::new("."))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let pins = PinGuard(PathBuf::from(format!(
        "/sys/fs/bpf/anypop-demo-{}",
        std::process::id()
    )));

    // The POP's XDP_TX frames land on the router's veth, which needs an XDP program to take them.
    let _router_xdp = router.run(|| -> anyhow::Result<Baseline> {
        let mut b = Baseline::load()?;
        b.attach("base_pass", "r-pop")?;
        Ok(b)
    })??;

    let done = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel::<String>();

    // Backend: decap + dsr, and a game server that echoes every tick from the VIP.
    let (net_b, pins_b, done_b, tx_b) =
        (net.clone(), pins.0.clone(), Arc::clone(&done), tx.clone());
    let be_thread = backend.spawn(move || -> anyhow::Result<(u64, u64, u64)> {
        let mut be = BackendNode::start_with(&net_b, "be-1", &pins_b)?;
        let server =
            UdpSocket::bind(SocketAddrV4::new(VIP, GAME_PORT)).context("game server bind")?;
        server.set_read_timeout(Some(Duration::from_millis(100)))?;
        let _ = tx_b.send(format!(
            "backend: decap + dsr attached ({} XDP), game server on {VIP}:{GAME_PORT}",
            be.mode
        ));
        let mut attacker_seen = 0u64;
        let mut buf = [0u8; 1500];
        while !done_b.load(Ordering::Relaxed) {
            if let Ok((n, from)) = server.recv_from(&mut buf) {
                if from.ip() == std::net::IpAddr::V4(ATTACKER) {
                    attacker_seen += 1;
                    continue;
                }
                let _ = server.send_to(&buf[..n], from);
            }
        }
        let s = be.snapshot()?;
        be.stop()?;
        Ok((
            s.get(Reason::DecapIpip).packets,
            s.get(Reason::DsrRewrite).packets,
            attacker_seen,
        ))
    })?;
    println!(
        "{}",
        rx.recv_timeout(Duration::from_secs(30))
            .context("the backend did not start")?
    );

    // POP: the edge, with a per-second line of what it does and costs.
    let (net_p, pins_p, done_p, tx_p) = (net.clone(), pins.0.clone(), Arc::clone(&done), tx);
    let pop_thread = pop.spawn(move || -> anyhow::Result<telemetry::Snapshot> {
        let mut p = Pop::start_with(&net_p, "pop-1", &pins_p)?;
        let modes: Vec<String> = p.modes.iter().map(|(i, m)| format!("{i}: {m}")).collect();
        let _ = tx_p.send(format!("pop: edge attached ({})", modes.join(", ")));
        let _stats = crate::dataplane::edge::enable_cost_stats()?;
        let mut prev = p.snapshot()?;
        let mut prev_cost = p.edge.cost()?;
        let mut last = Instant::now();
        while !done_p.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            p.tick()?;
            if last.elapsed() >= Duration::from_secs(1) {
                let now = p.snapshot()?;
                let r = telemetry::rates(&prev, &now, last.elapsed().as_secs_f64());
                let parts: Vec<String> = r
                    .iter()
                    .filter(|(_, pps, _)| *pps > 0.0)
                    .map(|(reason, pps, _)| format!("{}={}/s", reason.name(), telemetry::si(*pps)))
                    .collect();
                let cost = p.edge.cost()?;
                let ns = cost
                    .0
                    .saturating_sub(prev_cost.0)
                    .checked_div(cost.1.saturating_sub(prev_cost.1))
                    .unwrap_or(0);
                prev_cost = cost;
                let _ = tx_p.send(format!(
                    "edge {ns:>3} ns/pkt | pop {}",
                    if parts.is_empty() {
                        "idle".into()
                    } else {
                        parts.join(" ")
                    }
                ));
                prev = now;
                last = Instant::now();
            }
        }
        let total = p.snapshot()?;
        p.stop(false)?;
        Ok(total)
    })?;
    println!(
        "{}",
        rx.recv_timeout(Duration::from_secs(30))
            .context("the POP did not start")?
    );

    // The player: a steady tick, each echoed by the game server; RTT and loss measured.
    let stop_all = Arc::new(AtomicBool::new(false));
    let sent_player = Arc::new(AtomicU64::new(0));
    let got_player = Arc::new(AtomicU64::new(0));
    let rtts = Arc::new(Mutex::new(Rtts::default()));
    let (sp, gp, rt, st) = (
        Arc::clone(&sent_player),
        Arc::clone(&got_player),
        Arc::clone(&rtts),
        Arc::clone(&stop_all),
    );
    let tick = opts.tick_rate.max(1);
    let player_thread = client.spawn(move || -> anyhow::Result<()> {
        let sock = UdpSocket::bind(SocketAddrV4::new(PLAYER, 0))?;
        sock.set_nonblocking(true)?;
        let start = Instant::now();
        let mut n = 0u64;
        let mut buf = [0u8; 64];
        while !st.load(Ordering::Relaxed) {
            let mut msg = [0u8; 16];
            msg[..8].copy_from_slice(&n.to_be_bytes());
            msg[8..].copy_from_slice(&(start.elapsed().as_micros() as u64).to_be_bytes());
            let _ = sock.send_to(&msg, SocketAddrV4::new(VIP, GAME_PORT));
            n += 1;
            sp.store(n, Ordering::Relaxed);
            let next = start + Duration::from_secs_f64(n as f64 / tick as f64);
            // Collect echoes until the next tick is due.
            while Instant::now() < next {
                match sock.recv_from(&mut buf) {
                    Ok((16, from))
                        if from == std::net::SocketAddr::V4(SocketAddrV4::new(VIP, GAME_PORT)) =>
                    {
                        let t = u64::from_be_bytes(buf[8..16].try_into().unwrap());
                        let rtt = (start.elapsed().as_micros() as u64).saturating_sub(t);
                        gp.fetch_add(1, Ordering::Relaxed);
                        let mut r = rt.lock().unwrap();
                        r.window.push(rtt);
                        r.all.push(rtt);
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_micros(200)),
                }
            }
        }
        Ok(())
    })?;

    // The attacker starts after a quarter of the run.
    let flood_on = Arc::new(AtomicBool::new(false));
    let sent_flood = Arc::new(AtomicU64::new(0));
    let (fo, sf, st2) = (
        Arc::clone(&flood_on),
        Arc::clone(&sent_flood),
        Arc::clone(&stop_all),
    );
    let flood_thread = client.spawn(move || -> anyhow::Result<()> {
        let sock = UdpSocket::bind(SocketAddrV4::new(ATTACKER, 0))?;
        sock.set_nonblocking(true)?;
        let payload = [0xaa_u8; 64];
        let mut n = 0u64;
        while !st2.load(Ordering::Relaxed) {
            if !fo.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            for _ in 0..256 {
                if sock
                    .send_to(&payload, SocketAddrV4::new(VIP, GAME_PORT))
                    .is_ok()
                {
                    n += 1;
                }
            }
            sf.store(n, Ordering::Relaxed);
        }
        Ok(())
    })?;

    let start = Instant::now();
    let flood_at = opts.duration / 4;
    let (mut last_flood, mut last_sent, mut last_got) = (0, 0, 0);
    println!(
        "running for {:?}: the flood starts after {:?} (Ctrl-C stops early)",
        opts.duration, flood_at
    );
    while start.elapsed() < opts.duration && !stop.load(Ordering::Relaxed) {
        if start.elapsed() >= flood_at && !flood_on.load(Ordering::Relaxed) {
            println!(">>> flood on: UDP from 198.18.0.2 to the VIP, flat out");
            flood_on.store(true, Ordering::Relaxed);
        }
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(1100)) {
            let (f, s, g) = (
                sent_flood.load(Ordering::Relaxed),
                sent_player.load(Ordering::Relaxed),
                got_player.load(Ordering::Relaxed),
            );
            let (p50, p99) = {
                let mut r = rtts.lock().unwrap();
                let mut w = std::mem::take(&mut r.window);
                (percentile(&mut w, 0.5), percentile(&mut w, 0.99))
            };
            println!(
                "t={:>4.1}s flood {:>7}/s | player {:>3}/{:<3} echoed, rtt p50 {:>5} µs p99 {:>5} µs | {line}",
                start.elapsed().as_secs_f64(),
                telemetry::si((f - last_flood) as f64),
                g - last_got,
                s - last_sent,
                p50,
                p99
            );
            (last_flood, last_sent, last_got) = (f, s, g);
        }
    }
    flood_on.store(false, Ordering::Relaxed);
    stop_all.store(true, Ordering::Relaxed);
    let _ = player_thread.join();
    let _ = flood_thread.join();
    std::thread::sleep(Duration::from_millis(300));
    done.store(true, Ordering::Relaxed);
    let pop_total = pop_thread
        .join()
        .map_err(|_| anyhow::anyhow!("pop thread panicked"))???;
    let (decapped, dsr, attacker_seen) = be_thread
        .join()
        .map_err(|_| anyhow::anyhow!("backend thread panicked"))???;

    let sent = sent_player.load(Ordering::Relaxed);
    let got = got_player.load(Ordering::Relaxed);
    let loss = if sent == 0 {
        100.0
    } else {
        100.0 * sent.saturating_sub(got) as f64 / sent as f64
    };
    let (p50, p99) = {
        let mut r = rtts.lock().unwrap();
        let mut all = std::mem::take(&mut r.all);
        (percentile(&mut all, 0.5), percentile(&mut all, 0.99))
    };
    println!("\n== summary");
    println!(
        "player: {sent} ticks sent, {got} echoes back (loss {loss:.2}%), rtt p50 {p50} µs, p99 {p99} µs"
    );
    println!(
        "flood: {} packets sent; dropped at the POP by rule: {}; reached the game server: {attacker_seen}",
        sent_flood.load(Ordering::Relaxed),
        pop_total.get(Reason::DropRule).packets
    );
    println!(
        "pop: fwd_ipip {}; backend: decap_ipip {decapped}, replies sent direct (dsr_rewrite) {dsr}",
        pop_total.get(Reason::FwdIpip).packets
    );
    let ok = loss < 1.0 && attacker_seen == 0;
    println!(
        "{}",
        if ok {
            "players survived the flood: it was dropped at the POP, replies went straight back"
        } else {
            "players did NOT get through cleanly (see above)"
        }
    );
    println!("cleaning up namespaces and pins");
    Ok(ok)
}
