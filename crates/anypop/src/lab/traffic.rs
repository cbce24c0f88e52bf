//! The traffic of a lab: players, game servers on every backend, and the attacker's flood — the
//! handles the demo and the end-to-end tests drive.
use std::{
    net::SocketAddrV4,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
};

use super::{
    game::{self, PlayerStats, ServerStats},
    topology::{ATTACK_RANGE, GAME_PORT, Lab, TCP_PORT, VIP, player_addr},
};
use crate::dataplane::trafficgen::{Flood, FloodKind, Pace, TrafficGen};

/// A flood running from the attacker into every POP's transit link.
pub struct RunningFlood {
    pub sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<anyhow::Result<anyhow::Result<u64>>>>,
    links: Vec<String>,
}

impl RunningFlood {
    /// Starts one generator per POP: `kind` from random sources in the attacker's range to the
    /// VIP's service of that protocol, `total_pps` split evenly (0: flat out), `max_frames` per
    /// POP if given.
    pub fn start(
        lab: &Lab,
        kind: FloodKind,
        total_pps: u64,
        max_frames: Option<u64>,
    ) -> anyhow::Result<RunningFlood> {
        let range: ipnet::Ipv4Net = ATTACK_RANGE.parse()?;
        Self::start_from(lab, kind, range, true, total_pps, max_frames)
    }

    /// Like [`RunningFlood::start`], from random sources in `sources`, with random or fixed
    /// (40000) source ports: legitimate-looking traffic when `sources` is not blocklisted.
    pub fn start_from(
        lab: &Lab,
        kind: FloodKind,
        sources: ipnet::Ipv4Net,
        random_sport: bool,
        total_pps: u64,
        max_frames: Option<u64>,
    ) -> anyhow::Result<RunningFlood> {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let pops = lab.topology.pops;
        let mut threads = Vec::new();
        let mut links = Vec::new();
        for i in 1..=pops {
            let link = format!("at{i}");
            let ifindex = Lab::ifindex(&lab.attacker, &link)?;
            let flood = Flood {
                kind,
                src: sources.network(),
                src_prefix_len: sources.prefix_len(),
                sport: 40000,
                random_sport,
                dst: VIP,
                // Each kind at the service of its protocol, where the blocklist applies.
                dport: if kind == FloodKind::TcpSyn {
                    TCP_PORT
                } else {
                    GAME_PORT
                },
                payload_len: 32,
                src_mac: Lab::mac(&lab.attacker, &link)?,
                dst_mac: Lab::mac(&lab.pops[i - 1], &format!("pop{i}-tr"))?,
            };
            let pace = Pace {
                pps: (total_pps > 0).then(|| (total_pps / pops as u64).max(1)),
                max_frames,
            };
            let (stop_t, sent_t) = (Arc::clone(&stop), Arc::clone(&sent));
            threads.push(lab.attacker.spawn(move || -> anyhow::Result<u64> {
                let mut generator = TrafficGen::load()?;
                Ok(generator.flood(&flood, ifindex, pace, &stop_t, &sent_t)?)
            })?);
            links.push(link);
        }
        Ok(RunningFlood {
            sent,
            stop,
            threads,
            links,
        })
    }

    /// Whether every generator has finished (`max_frames` reached).
    pub fn finished(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }

    /// Stops the flood; returns (frames sent, frames the attacker's veths dropped).
    pub fn stop(self, lab: &Lab) -> anyhow::Result<(u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = 0;
        for t in self.threads {
            total += t
                .join()
                .map_err(|_| anyhow::anyhow!("generator thread panicked"))???;
        }
        let dropped = self
            .links
            .iter()
            .map(|l| Lab::drops(&lab.attacker, l))
            .sum();
        Ok((total, dropped))
    }
}

/// Players of the demo and tests: UDP players at fixed ports (so their hashing is repeatable).
pub struct Players {
    pub stats: Vec<Arc<PlayerStats>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl Players {
    /// Starts players `first..first+n` (addresses [`player_addr`], port 40000 + index).
    pub fn start(lab: &Lab, first: usize, n: usize, tick_rate: u32) -> anyhow::Result<Players> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut stats = Vec::new();
        let mut threads = Vec::new();
        for i in first..first + n {
            let (s, t) = game::spawn_player(
                &lab.players,
                SocketAddrV4::new(player_addr(i), 40000 + i as u16),
                SocketAddrV4::new(VIP, GAME_PORT),
                tick_rate,
                Arc::clone(&stop),
            )?;
            stats.push(s);
            threads.push(t);
        }
        Ok(Players {
            stats,
            stop,
            threads,
        })
    }

    pub fn sent(&self) -> u64 {
        self.stats
            .iter()
            .map(|s| s.sent.load(Ordering::Relaxed))
            .sum()
    }
    pub fn got(&self) -> u64 {
        self.stats
            .iter()
            .map(|s| s.got.load(Ordering::Relaxed))
            .sum()
    }
    pub fn backend_changes(&self) -> u64 {
        self.stats
            .iter()
            .map(|s| s.backend_changes.load(Ordering::Relaxed))
            .sum()
    }

    /// Stops every player (each collects its last echoes first).
    pub fn stop(self) -> anyhow::Result<Vec<Arc<PlayerStats>>> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join()
                .map_err(|_| anyhow::anyhow!("player thread panicked"))??;
        }
        Ok(self.stats)
    }
}

/// Game servers on every backend (backend j answers with id j).
pub struct Servers {
    pub stats: Vec<Arc<ServerStats>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl Servers {
    pub fn start(lab: &Lab) -> anyhow::Result<Servers> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut stats = Vec::new();
        let mut threads = Vec::new();
        for (j, ns) in lab.backends.iter().enumerate() {
            let (s, t) = game::spawn_server(
                ns,
                (j + 1) as u8,
                VIP,
                GAME_PORT,
                TCP_PORT,
                ATTACK_RANGE.parse()?,
                Arc::clone(&stop),
            )?;
            stats.push(s);
            threads.push(t);
        }
        Ok(Servers {
            stats,
            stop,
            threads,
        })
    }

    /// Flood packets that reached a game server (should stay 0).
    pub fn unwanted(&self) -> u64 {
        self.stats
            .iter()
            .map(|s| s.unwanted.load(Ordering::Relaxed))
            .sum()
    }

    pub fn stop(self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join()
                .map_err(|_| anyhow::anyhow!("server thread panicked"))??;
        }
        Ok(())
    }
}
