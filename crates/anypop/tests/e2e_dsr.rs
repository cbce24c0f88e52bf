//! The whole path in network namespaces: a player, a router (the "internet"), a POP running the
//! real `anypop run` (edge) and a backend running the real `anypop run` (decap + dsr), with game
//! servers bound on the VIP. Real UDP and TCP sockets; the replies come back with the VIP as
//! source and never pass the POP.
use std::{
    io::{Read, Write},
    net::{SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use anypop::lab::topology::{Lab, Topology, VIP, player_addr};
use anypop_common::verdict::Reason;

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
    let idx = anypop::sys::iface::ifindex(ifname, "test").unwrap();
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

#[test]
fn udp_and_tcp_through_pop_with_direct_replies() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "run as root");
    let lab = Lab::build(
        Topology {
            pops: 1,
            backends: 1,
        },
        std::path::Path::new(env!("CARGO_BIN_EXE_anypop")),
        &|_| {},
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    // Backend: a UDP echo and a TCP echo bound on the VIP (the daemon put it on lo).
    let stop_b = Arc::clone(&stop);
    let be_thread = lab.backends[0]
        .spawn(move || {
            let udp = UdpSocket::bind(SocketAddrV4::new(VIP, 27015)).unwrap();
            udp.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let tcp = TcpListener::bind(SocketAddrV4::new(VIP, 27016)).unwrap();
            tcp.set_nonblocking(true).unwrap();
            tx.send("backend ready".into()).unwrap();
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
        })
        .unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(20)).unwrap(),
        "backend ready"
    );
    // A capture on the POP's interface: no reply (source = VIP) may pass it.
    let seen = Arc::new(AtomicU64::new(0));
    let (stop_c, seen_c) = (Arc::clone(&stop), Arc::clone(&seen));
    let capture = lab.pops[0]
        .spawn(move || count_vip_sourced("pop1-in", stop_c, seen_c))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let pop_before = lab.verdicts("pop-1").unwrap();
    let be_before = lab.verdicts("be-1").unwrap();

    // The player: UDP round trips and one TCP connection, all to the VIP.
    let me = player_addr(0);
    let result = lab
        .players
        .run(move || -> Result<(u32, String), String> {
            let s = UdpSocket::bind(SocketAddrV4::new(me, 0)).map_err(|e| e.to_string())?;
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
                &SocketAddrV4::new(VIP, 27016).into(),
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
    be_thread.join().unwrap().unwrap();
    capture.join().unwrap().unwrap();
    let pop = lab.verdicts("pop-1").unwrap();
    let be = lab.verdicts("be-1").unwrap();
    let d = |a: &anypop::telemetry::Snapshot, b: &anypop::telemetry::Snapshot, r| {
        b.get(r).packets - a.get(r).packets
    };

    let (udp_ok, tcp_echo) = result.expect("player traffic");
    assert!(udp_ok >= 19, "UDP round trips: {udp_ok}/20");
    assert_eq!(tcp_echo, "hello over tcp");
    assert!(
        d(&pop_before, &pop, Reason::FwdIpip) >= 20,
        "POP forwarded {:?}",
        pop.get(Reason::FwdIpip)
    );
    assert!(
        d(&be_before, &be, Reason::DecapIpip) >= 20,
        "backend decapsulated"
    );
    assert!(
        d(&be_before, &be, Reason::DsrRewrite) >= 20,
        "replies through dsr"
    );
    assert_eq!(
        seen.load(Ordering::Relaxed),
        0,
        "a reply (source VIP) passed the POP"
    );
}
