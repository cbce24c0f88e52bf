//! The whole path in network namespaces: a player, a router (the "internet"), a POP running the
//! real `edge` and a backend running the real `decap` + `dsr`, with game servers bound on the
//! VIP. Real UDP and TCP sockets; the replies come back with the VIP as source and never pass the
//! POP.
use std::{
    io::{Read, Write},
    net::{SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use anypop::{
    config,
    daemon::{BackendNode, Pop},
    dataplane::baseline::Baseline,
    lab::{demo::build, netns::Netns},
};
use anypop_common::verdict::Reason;

const NETWORK: &str = r#"
[[service]]
name = "game"
vip = "203.0.113.10"
protocol = "udp"
ports = "27015"
backends = ["be-1"]

[[service]]
name = "web"
vip = "203.0.113.10"
protocol = "tcp"
ports = "443"
backends = ["be-1"]

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

const VIP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(203, 0, 113, 10);

/// Counts frames with IPv4 source = VIP seen on an interface (AF_PACKET, in the calling thread's
/// namespace) until `stop`.
fn count_vip_sourced(ifname: &str, stop: Arc<AtomicBool>, seen: Arc<AtomicU64>) {
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            (libc::ETH_P_ALL as u16).to_be() as i32,
        )
    };
    assert!(
        fd >= 0,
        "packet socket: {}",
        std::io::Error::last_os_error()
    );
    let idx = anypop::daemon::ifindex(ifname, "test").unwrap();
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = idx as i32;
    let rc = unsafe {
        libc::bind(
            fd,
            &sll as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(rc, 0);
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
        if n >= 34 && buf[12] == 0x08 && buf[13] == 0x00 && buf[26..30] == VIP.octets() {
            seen.fetch_add(1, Ordering::Relaxed);
        }
    }
    unsafe { libc::close(fd) };
}

struct PinGuard(PathBuf);
impl Drop for PinGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn udp_and_tcp_through_pop_with_direct_replies() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "run as root");
    let player = Netns::new("player").unwrap();
    let router = Netns::new("router").unwrap();
    let pop = Netns::new("pop").unwrap();
    let backend = Netns::new("backend").unwrap();
    // The demo's topology: client (player + attacker) — router — POP, router — backend.
    build(&player, &router, &pop, &backend).unwrap();
    let pins = PinGuard(PathBuf::from(format!(
        "/sys/fs/bpf/anypop-e2e-{}",
        std::process::id()
    )));
    let net = config::parse(NETWORK, "e2e.toml", std::path::Path::new(".")).unwrap();

    // The POP's XDP_TX lands on the router's veth, which needs an XDP program to accept it.
    let _router_xdp = router
        .run(|| {
            let mut b = Baseline::load().unwrap();
            b.attach("base_pass", "r-pop").unwrap();
            b
        })
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (net_b, pins_b, stop_b) = (net.clone(), pins.0.clone(), Arc::clone(&stop));
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let tx_b = tx.clone();
    // Backend: decap + dsr, a UDP echo and a TCP echo bound on the VIP.
    let be_thread = backend
        .spawn(move || {
            let mut be = BackendNode::start_with(&net_b, "be-1", &pins_b).unwrap();
            let udp = UdpSocket::bind(SocketAddrV4::new(VIP, 27015)).unwrap();
            udp.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let tcp = TcpListener::bind(SocketAddrV4::new(VIP, 443)).unwrap();
            tcp.set_nonblocking(true).unwrap();
            tx_b.send("backend ready".into()).unwrap();
            let mut buf = [0u8; 1500];
            while !stop_b.load(Ordering::Relaxed) {
                if let Ok((n, from)) = udp.recv_from(&mut buf) {
                    udp.send_to(&buf[..n], from).unwrap();
                }
                if let Ok((mut s, _)) = tcp.accept() {
                    s.set_nonblocking(false).unwrap();
                    let mut b = [0u8; 64];
                    let n = s.read(&mut b).unwrap();
                    s.write_all(&b[..n]).unwrap();
                }
            }
            let snap = be.snapshot().unwrap();
            be.stop().unwrap();
            snap
        })
        .unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(20)).unwrap(),
        "backend ready"
    );

    let (net_p, pins_p, stop_p) = (net.clone(), pins.0.clone(), Arc::clone(&stop));
    let seen = Arc::new(AtomicU64::new(0));
    let seen_p = Arc::clone(&seen);
    let pop_thread = pop
        .spawn(move || {
            let mut p = Pop::start_with(&net_p, "pop-1", &pins_p).unwrap();
            tx.send("pop ready".into()).unwrap();
            let stop_c = Arc::clone(&stop_p);
            let capture = std::thread::spawn(move || count_vip_sourced("pop-in", stop_c, seen_p));
            while !stop_p.load(Ordering::Relaxed) {
                p.tick().unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = capture.join();
            let snap = p.snapshot().unwrap();
            p.stop(false).unwrap();
            snap
        })
        .unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(20)).unwrap(),
        "pop ready"
    );
    std::thread::sleep(Duration::from_millis(300));

    // The player: UDP round trips and one TCP connection, all to the VIP.
    let result = player
        .run(|| -> Result<(u32, String), String> {
            let s = UdpSocket::bind("100.64.0.2:0").map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let mut ok = 0;
            let mut buf = [0u8; 64];
            for i in 0..20u32 {
                s.send_to(&i.to_be_bytes(), SocketAddrV4::new(VIP, 27015))
                    .map_err(|e| e.to_string())?;
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    assert_eq!(
                        from,
                        std::net::SocketAddr::V4(SocketAddrV4::new(VIP, 27015)),
                        "reply source is the VIP"
                    );
                    assert_eq!(&buf[..n], &i.to_be_bytes());
                    ok += 1;
                }
            }
            let mut t = TcpStream::connect_timeout(
                &SocketAddrV4::new(VIP, 443).into(),
                Duration::from_secs(3),
            )
            .map_err(|e| format!("tcp connect: {e}"))?;
            t.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            t.write_all(b"hello over tcp").map_err(|e| e.to_string())?;
            let mut back = [0u8; 64];
            let n = t.read(&mut back).map_err(|e| format!("tcp read: {e}"))?;
            Ok((ok, String::from_utf8_lossy(&back[..n]).into_owned()))
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let pop_snap = pop_thread.join().unwrap().unwrap();
    let be_snap = be_thread.join().unwrap().unwrap();

    let (udp_ok, tcp_echo) = result.expect("player traffic");
    assert!(udp_ok >= 19, "UDP round trips: {udp_ok}/20");
    assert_eq!(tcp_echo, "hello over tcp");
    assert!(
        pop_snap.get(Reason::FwdIpip).packets >= 20,
        "POP forwarded {:?}",
        pop_snap.get(Reason::FwdIpip)
    );
    assert!(
        be_snap.get(Reason::DecapIpip).packets >= 20,
        "backend decapsulated"
    );
    assert!(
        be_snap.get(Reason::DsrRewrite).packets >= 20,
        "replies through dsr"
    );
    assert_eq!(
        seen.load(Ordering::Relaxed),
        0,
        "a reply (source VIP) passed the POP"
    );
}
