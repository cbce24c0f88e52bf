//! The lab's game: a small game server for backends and game clients for players.
//!
//! The UDP game is a tick echo: a player sends `[seq u64][sent µs u64]` at a game-like tick rate
//! (64/s), the server answers with the same bytes plus the number of the backend that answered,
//! so a player knows its loss, its round-trip time and *which backend* serves it (a route flap
//! between POPs must never change that). The TCP service echoes lines, like a login or RCON port.
use std::{
    io::{BufRead, BufReader, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Context;

use super::netns::Netns;

/// What a game server saw.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// UDP ticks answered.
    pub echoed: AtomicU64,
    /// Packets from a source in `unwanted` (the attacker's range): a flood that got through.
    pub unwanted: AtomicU64,
    /// TCP connections accepted.
    pub tcp_sessions: AtomicU64,
}

/// Starts a game server in `ns` bound on `vip`: UDP echo on `udp_port` answering with
/// `backend_id`, TCP line echo on `tcp_port`. Binding waits (up to 30 s) for the VIP to appear
/// on the namespace's `lo` (the backend daemon adds it). Runs until `stop`.
pub fn spawn_server(
    ns: &Netns,
    backend_id: u8,
    vip: Ipv4Addr,
    udp_port: u16,
    tcp_port: u16,
    unwanted: ipnet::Ipv4Net,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(Arc<ServerStats>, JoinHandle<anyhow::Result<()>>)> {
    let stats = Arc::new(ServerStats::default());
    let st = Arc::clone(&stats);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    let handle = ns.spawn(move || -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let bound = loop {
            match (
                UdpSocket::bind(SocketAddrV4::new(vip, udp_port)),
                TcpListener::bind(SocketAddrV4::new(vip, tcp_port)),
            ) {
                (Ok(u), Ok(t)) => break Ok((u, t)),
                (Err(e), _) | (_, Err(e)) if Instant::now() > deadline => {
                    break Err(anyhow::anyhow!(
                        "game server cannot bind {vip}: {e} (the backend daemon adds the VIP to lo)"
                    ));
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let (udp, tcp) = match bound {
            Ok(b) => {
                let _ = ready_tx.send(Ok(()));
                b
            }
            Err(e) => {
                let _ = ready_tx.send(Err(anyhow::anyhow!("{e:#}")));
                return Err(e);
            }
        };
        udp.set_read_timeout(Some(Duration::from_millis(50)))?;
        tcp.set_nonblocking(true)?;
        let mut sessions: Vec<JoinHandle<()>> = Vec::new();
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            // TCP: one thread per session (a handful in the lab).
            while let Ok((conn, _)) = tcp.accept() {
                st.tcp_sessions.fetch_add(1, Ordering::Relaxed);
                let stop = Arc::clone(&stop);
                sessions.push(std::thread::spawn(move || echo_lines(conn, &stop)));
            }
            match udp.recv_from(&mut buf) {
                Ok((n, SocketAddr::V4(from))) => {
                    if unwanted.contains(from.ip()) {
                        st.unwanted.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if n >= 16 {
                        buf[n] = backend_id;
                        let _ = udp.send_to(&buf[..n + 1], from);
                        st.echoed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(_) => {}
                Err(_) => {}
            }
        }
        for s in sessions {
            let _ = s.join();
        }
        Ok(())
    })?;
    let handle = std::thread::spawn(move || {
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("game server thread panicked"))?
            .and_then(|r| r)
    });
    ready_rx
        .recv_timeout(Duration::from_secs(35))
        .context("the game server did not start")??;
    Ok((stats, handle))
}

/// Echoes every line of a TCP session until the peer closes or `stop`.
fn echo_lines(conn: TcpStream, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {
                if out.write_all(line.as_bytes()).is_err() {
                    return;
                }
                line.clear();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// What a player experienced.
#[derive(Debug, Default)]
pub struct PlayerStats {
    pub sent: AtomicU64,
    pub got: AtomicU64,
    /// Ticks per second; change it while the player runs (a greedy player, a pause with 0).
    pub tick_rate: AtomicU32,
    /// The backend that answered last (0: none yet).
    pub backend: AtomicU8,
    /// Times the answering backend changed: a player whose session moved to another backend.
    pub backend_changes: AtomicU64,
    /// Round-trip times in µs since the last [`PlayerStats::take_rtts`].
    rtts: Mutex<Vec<u32>>,
    /// Every round-trip time, for the summary.
    all_rtts: Mutex<Vec<u32>>,
}

impl PlayerStats {
    /// The round-trip times since the last call (µs).
    pub fn take_rtts(&self) -> Vec<u32> {
        std::mem::take(&mut *self.rtts.lock().unwrap())
    }
    /// Every round-trip time so far (µs).
    pub fn all_rtts(&self) -> Vec<u32> {
        self.all_rtts.lock().unwrap().clone()
    }
}

/// Starts a UDP player in `ns` from `addr:port` to `vip:game_port` at `tick_rate`, until `stop`.
pub fn spawn_player(
    ns: &Netns,
    addr: SocketAddrV4,
    vip: SocketAddrV4,
    tick_rate: u32,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(Arc<PlayerStats>, JoinHandle<anyhow::Result<()>>)> {
    let stats = Arc::new(PlayerStats::default());
    stats.tick_rate.store(tick_rate, Ordering::Relaxed);
    let st = Arc::clone(&stats);
    let h = ns.spawn(move || -> anyhow::Result<()> {
        let sock = UdpSocket::bind(addr).with_context(|| format!("player bind {addr}"))?;
        sock.set_nonblocking(true)?;
        let start = Instant::now();
        let mut next = Instant::now();
        let mut seq = 0u64;
        let mut buf = [0u8; 64];
        while !stop.load(Ordering::Relaxed) {
            let rate = st.tick_rate.load(Ordering::Relaxed);
            let now = Instant::now();
            if rate > 0 && now >= next {
                let mut msg = [0u8; 16];
                msg[..8].copy_from_slice(&seq.to_be_bytes());
                msg[8..].copy_from_slice(&(start.elapsed().as_micros() as u64).to_be_bytes());
                if sock.send_to(&msg, vip).is_ok() {
                    st.sent.fetch_add(1, Ordering::Relaxed);
                }
                seq += 1;
                next += Duration::from_secs_f64(1.0 / rate as f64);
                if next < now {
                    next = now; // after a pause, do not burst to catch up
                }
            }
            // Wait for an echo until the next tick is due (poll has sub-millisecond timers;
            // a socket read timeout is rounded up to the kernel's tick and would slow a fast
            // player down).
            let wait = next
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(5));
            wait_readable(&sock, wait);
            match sock.recv_from(&mut buf) {
                Ok((17, from)) if from == SocketAddr::V4(vip) => {
                    let t = u64::from_be_bytes(buf[8..16].try_into().unwrap());
                    let rtt = (start.elapsed().as_micros() as u64).saturating_sub(t) as u32;
                    st.got.fetch_add(1, Ordering::Relaxed);
                    let be = buf[16];
                    let prev = st.backend.swap(be, Ordering::Relaxed);
                    if prev != 0 && prev != be {
                        st.backend_changes.fetch_add(1, Ordering::Relaxed);
                    }
                    st.rtts.lock().unwrap().push(rtt);
                    st.all_rtts.lock().unwrap().push(rtt);
                }
                _ => {}
            }
        }
        // Collect late echoes of the last ticks.
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            wait_readable(&sock, Duration::from_millis(5));
            if let Ok((17, _)) = sock.recv_from(&mut buf) {
                st.got.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    })?;
    let h = std::thread::spawn(move || {
        h.join()
            .map_err(|_| anyhow::anyhow!("player thread panicked"))?
            .and_then(|r| r)
    });
    Ok((stats, h))
}

/// Waits until `sock` is readable or `timeout` passes.
fn wait_readable(sock: &UdpSocket, timeout: Duration) {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
}

/// What a TCP player experienced.
#[derive(Debug, Default)]
pub struct TcpStats {
    pub sent: AtomicU64,
    pub echoed: AtomicU64,
    /// Set when the session broke (reset, timeout): a lost player.
    pub broken: AtomicBool,
}

/// Starts a TCP player in `ns`: one session from `addr` to `vip`, a line every `1/rate` s, each
/// echo awaited (2 s at most) before the next. Runs until `stop`.
pub fn spawn_tcp_player(
    ns: &Netns,
    addr: Ipv4Addr,
    vip: SocketAddrV4,
    rate: u32,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(Arc<TcpStats>, JoinHandle<anyhow::Result<()>>)> {
    let stats = Arc::new(TcpStats::default());
    let st = Arc::clone(&stats);
    let h = ns.spawn(move || -> anyhow::Result<()> {
        let sock = socket2_connect(addr, vip)?;
        sock.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut out = sock.try_clone()?;
        let mut reader = BufReader::new(sock);
        let mut line = String::new();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let msg = format!("tick {n}\n");
            if out.write_all(msg.as_bytes()).is_err() {
                st.broken.store(true, Ordering::Relaxed);
                break;
            }
            st.sent.fetch_add(1, Ordering::Relaxed);
            line.clear();
            match reader.read_line(&mut line) {
                Ok(_) if line == msg => {
                    st.echoed.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    st.broken.store(true, Ordering::Relaxed);
                    break;
                }
            }
            n += 1;
            std::thread::sleep(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
        }
        Ok(())
    })?;
    let h = std::thread::spawn(move || {
        h.join()
            .map_err(|_| anyhow::anyhow!("tcp player thread panicked"))?
            .and_then(|r| r)
    });
    Ok((stats, h))
}

/// One TCP session from `addr` in `ns` to `vip`: sends one line of `bytes` bytes and waits
/// (at most `timeout`) for the server to echo it whole. A player's upload in full-size
/// segments: each is too big for the POP to tunnel, so this completes only if the player's
/// path-MTU discovery learns the tunnel's MTU (the POP's ICMP "fragmentation needed").
pub fn tcp_upload(
    ns: &Netns,
    addr: Ipv4Addr,
    vip: SocketAddrV4,
    bytes: usize,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let h = ns.spawn(move || -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        let sock = socket2_connect(addr, vip)?;
        sock.set_read_timeout(Some(timeout))?;
        sock.set_write_timeout(Some(timeout))?;
        let mut line: Vec<u8> = (0..bytes).map(|i| b'a' + (i % 26) as u8).collect();
        line.push(b'\n');
        let mut out = sock.try_clone()?;
        let writer = std::thread::spawn(move || out.write_all(&line).map(|_| line));
        let mut reader = BufReader::new(sock);
        let mut echo = Vec::new();
        let read = reader.read_until(b'\n', &mut echo);
        let line = writer
            .join()
            .map_err(|_| anyhow::anyhow!("writer thread panicked"))?
            .with_context(|| format!("upload of {bytes} bytes stalled"))?;
        read.map_err(|e| {
            anyhow::anyhow!(
                "echo of a {bytes}-byte upload stalled after {} bytes: {e}",
                echo.len()
            )
        })?;
        anyhow::ensure!(
            echo == line,
            "echo differs: {} of {} bytes",
            echo.len(),
            line.len()
        );
        Ok(t0.elapsed())
    })?;
    h.join()
        .map_err(|_| anyhow::anyhow!("tcp upload thread panicked"))?
        .and_then(|r| r)
}

/// A TCP connection from a chosen local address (std binds only the remote side).
fn socket2_connect(local: Ipv4Addr, remote: SocketAddrV4) -> anyhow::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        anyhow::bail!("socket: {}", std::io::Error::last_os_error());
    }
    // Owned from here on: closed on every error path.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let sa = |a: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let l = sa(local, 0);
    if unsafe { libc::bind(fd, &l as *const _ as *const libc::sockaddr, len) } != 0 {
        anyhow::bail!("bind {local}: {}", std::io::Error::last_os_error());
    }
    let r = sa(*remote.ip(), remote.port());
    if unsafe { libc::connect(fd, &r as *const _ as *const libc::sockaddr, len) } != 0 {
        anyhow::bail!("connect {remote}: {}", std::io::Error::last_os_error());
    }
    Ok(stream)
}

/// The `p`-quantile of `v` (sorted in place); 0 for none.
pub fn percentile(v: &mut [u32], p: f64) -> u32 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize]
}
