//! `anypop lab demo`: a POP in network namespaces keeps a player's traffic flowing to its backend
//! while a flood hits the same VIP, with a live view once a second.
//!
//! Topology (every namespace is ours, named `ap-<pid>-…`, and deleted at the end):
//! ```text
//!  client ns                      pop ns                           backend ns
//!  player   100.64.0.2 ─┐   pop-in 100.64.0.1/198.18.0.1   pop-out 192.0.2.1 ── be-in 192.0.2.21
//!  attacker 198.18.0.2 ─┘   (XDP edge on pop-in)            (IPIP out, redirect)   raw IPIP counter
//! ```
//! The backend's decapsulation and direct replies are the next issue; here the backend counts the
//! IPIP packets it receives, by inner source, which is what the POP is responsible for.
use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;

use super::netns::{Netns, remove_leftovers, veth};
use crate::{config, daemon::Pop, telemetry};
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
interfaces = ["pop-in", "pop-out"]
tunnel_source = "192.0.2.1"

[[node]]
name = "be-1"
role = "backend"
interface = "be-in"
address = "192.0.2.21"
"#;

const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const PLAYER: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
const ATTACKER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

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

/// Counts IPIP packets arriving at the backend, by inner source (player / attacker / other).
fn backend_counter(
    stop: Arc<AtomicBool>,
    player: Arc<AtomicU64>,
    attacker: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    // A raw socket for protocol 4 receives every IPIP packet delivered to this host.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, 4) };
    if fd < 0 {
        anyhow::bail!("raw IPIP socket: {}", std::io::Error::last_os_error());
    }
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        );
    }
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
        if n < 40 {
            continue;
        }
        // outer IPv4 header (20) then inner IPv4 header: inner source at 20 + 12.
        let src = Ipv4Addr::new(buf[32], buf[33], buf[34], buf[35]);
        if src == PLAYER {
            player.fetch_add(1, Ordering::Relaxed);
        } else if src == ATTACKER {
            attacker.fetch_add(1, Ordering::Relaxed);
        }
    }
    unsafe { libc::close(fd) };
    Ok(())
}

/// Runs the demo; returns true when the player got through (under 1% loss to the backend).
pub fn run(opts: DemoOptions, stop: Arc<AtomicBool>) -> anyhow::Result<bool> {
    remove_leftovers();
    println!("building the lab: client, pop and backend namespaces …");
    let client = Netns::new("client")?;
    let pop = Netns::new("pop")?;
    let backend = Netns::new("backend")?;
    veth(&client, "c0", &pop, "pop-in")?;
    veth(&pop, "pop-out", &backend, "be-in")?;
    client.exec(&["ip", "addr", "add", "100.64.0.2/24", "dev", "c0"])?;
    client.exec(&["ip", "addr", "add", "198.18.0.2/24", "dev", "c0"])?;
    client.exec(&["ip", "route", "add", "203.0.113.0/24", "via", "100.64.0.1"])?;
    pop.exec(&["ip", "addr", "add", "100.64.0.1/24", "dev", "pop-in"])?;
    pop.exec(&["ip", "addr", "add", "198.18.0.1/24", "dev", "pop-in"])?;
    pop.exec(&["ip", "addr", "add", "192.0.2.1/24", "dev", "pop-out"])?;
    pop.exec(&["sysctl", "-q", "-w", "net.ipv4.conf.all.forwarding=1"])?;
    pop.exec(&["sysctl", "-q", "-w", "net.ipv4.conf.pop-in.forwarding=1"])?;
    pop.exec(&["sysctl", "-q", "-w", "net.ipv4.conf.pop-out.forwarding=1"])?;
    backend.exec(&["ip", "addr", "add", "192.0.2.21/24", "dev", "be-in"])?;
    // Until the backend's MAC is resolved (the daemon probes it at start), encapsulated packets
    // are handed to the kernel, which must accept their local outer source to forward them.
    pop.exec(&["sysctl", "-q", "-w", "net.ipv4.conf.pop-in.accept_local=1"])?;

    let net = config::parse(DEMO_NETWORK, "demo.toml", std::path::Path::new("."))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let pins = PinGuard(PathBuf::from(format!(
        "/sys/fs/bpf/anypop-demo-{}",
        std::process::id()
    )));
    let pin_root = pins.0.clone();

    // The POP daemon lives on a thread inside the pop namespace for the whole demo.
    let done = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let pop_done = Arc::clone(&done);
    let pop_thread = pop.spawn(move || -> anyhow::Result<()> {
        // XDP_REDIRECT into a veth needs an XDP program on the receiving peer; the backend's
        // own program (decap) arrives with the next issue, an XDP_PASS stands in for it.
        let mut p = Pop::start_with(&net, "pop-1", &pin_root)?;
        let modes: Vec<String> = p.modes.iter().map(|(i, m)| format!("{i}: {m}")).collect();
        let _ = tx.send(format!("edge attached ({})", modes.join(", ")));
        let _stats = crate::dataplane::edge::enable_cost_stats()?;
        let mut prev = p.snapshot()?;
        let mut prev_cost = p.edge.cost()?;
        let mut last = Instant::now();
        while !pop_done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            p.tick()?;
            if last.elapsed() >= Duration::from_secs(1) {
                let now = p.snapshot()?;
                let secs = last.elapsed().as_secs_f64();
                let r = telemetry::rates(&prev, &now, secs);
                let mut parts = Vec::new();
                for (reason, pps, _) in r {
                    if pps > 0.0 {
                        parts.push(format!("{}={}/s", reason.name(), telemetry::si(pps)));
                    }
                }
                let cost = p.edge.cost()?;
                let runs = cost.1.saturating_sub(prev_cost.1);
                let ns = cost
                    .0
                    .saturating_sub(prev_cost.0)
                    .checked_div(runs)
                    .unwrap_or(0);
                prev_cost = cost;
                let _ = tx.send(format!(
                    "edge {ns:>3} ns/pkt | pop: {}",
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
        let _ = tx.send(format!(
            "FINAL fwd_ipip={} drop_rule={} drop_rate_limit={} drop_blocked={}",
            total.get(Reason::FwdIpip).packets,
            total.get(Reason::DropRule).packets,
            total.get(Reason::DropRateLimit).packets,
            total.get(Reason::DropBlocked).packets
        ));
        p.stop(false)
    })?;
    let first = rx
        .recv_timeout(Duration::from_secs(30))
        .context("the POP did not start")?;
    println!("{first}");
    let _backend_xdp = attach_pass_on_backend(&backend)?;

    let counters_stop = Arc::new(AtomicBool::new(false));
    let be_player = Arc::new(AtomicU64::new(0));
    let be_attacker = Arc::new(AtomicU64::new(0));
    let (s, p, a) = (
        Arc::clone(&counters_stop),
        Arc::clone(&be_player),
        Arc::clone(&be_attacker),
    );
    let be_thread = backend.spawn(move || backend_counter(s, p, a))?;

    // The player: a steady tick.
    let sent_player = Arc::new(AtomicU64::new(0));
    let sp = Arc::clone(&sent_player);
    let st = Arc::clone(&counters_stop);
    let tick = opts.tick_rate.max(1);
    let player_thread = client.spawn(move || -> anyhow::Result<()> {
        let sock = UdpSocket::bind(SocketAddrV4::new(PLAYER, 0))?;
        let start = Instant::now();
        let mut n = 0u64;
        while !st.load(Ordering::Relaxed) {
            sock.send_to(&n.to_be_bytes(), SocketAddrV4::new(VIP, 28015))
                .ok();
            n += 1;
            sp.store(n, Ordering::Relaxed);
            let next = start + Duration::from_secs_f64(n as f64 / tick as f64);
            if let Some(d) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
        Ok(())
    })?;

    // The attacker starts after a few seconds of calm.
    let flood_on = Arc::new(AtomicBool::new(false));
    let sent_flood = Arc::new(AtomicU64::new(0));
    let (fo, sf, st2) = (
        Arc::clone(&flood_on),
        Arc::clone(&sent_flood),
        Arc::clone(&counters_stop),
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
                    .send_to(&payload, SocketAddrV4::new(VIP, 28015))
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
    let mut last_flood = 0;
    let mut last_be = 0;
    let mut final_line = String::new();
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
            let f = sent_flood.load(Ordering::Relaxed);
            let b = be_player.load(Ordering::Relaxed);
            println!(
                "t={:>4.1}s flood offered {:>7}/s | player→backend {:>4}/s | {line}",
                start.elapsed().as_secs_f64(),
                telemetry::si((f - last_flood) as f64),
                b - last_be
            );
            last_flood = f;
            last_be = b;
        }
    }
    flood_on.store(false, Ordering::Relaxed);
    counters_stop.store(true, Ordering::Relaxed);
    let _ = player_thread.join();
    let _ = flood_thread.join();
    std::thread::sleep(Duration::from_millis(300));
    done.store(true, Ordering::Relaxed);
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        if line.starts_with("FINAL") {
            final_line = line;
            break;
        }
    }
    pop_thread
        .join()
        .map_err(|_| anyhow::anyhow!("pop thread panicked"))???;
    let _ = be_thread.join();

    let sent = sent_player.load(Ordering::Relaxed);
    let got = be_player.load(Ordering::Relaxed);
    let leaked = be_attacker.load(Ordering::Relaxed);
    let loss = if sent == 0 {
        100.0
    } else {
        100.0 * (sent.saturating_sub(got)) as f64 / sent as f64
    };
    println!("\n== summary");
    println!("player packets sent {sent}, reached the backend {got} (loss {loss:.2}%)");
    println!(
        "flood packets sent {}, reached the backend {leaked}",
        sent_flood.load(Ordering::Relaxed)
    );
    println!("pop counters: {}", final_line.trim_start_matches("FINAL "));
    let ok = loss < 1.0 && leaked == 0;
    println!(
        "{}",
        if ok {
            "players survived the flood: every flood packet was dropped at the POP by rule"
        } else {
            "players did NOT get through cleanly (see above)"
        }
    );
    println!("cleaning up namespaces and pins");
    Ok(ok)
}

/// Attaches the baseline XDP_PASS program to the backend's veth (see the POP thread's note); it
/// stays attached while the returned value lives.
fn attach_pass_on_backend(backend: &Netns) -> anyhow::Result<crate::dataplane::baseline::Baseline> {
    backend.run(|| -> anyhow::Result<crate::dataplane::baseline::Baseline> {
        let mut b = crate::dataplane::baseline::Baseline::load()?;
        b.attach("base_pass", "be-in")?;
        Ok(b)
    })?
}
