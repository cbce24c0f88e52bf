//! The daemon's life as operators meet it: a data plane that outlives every way a daemon can end
//! (kill -9 right after a first start, on a POP and on a backend), an interface that vanished
//! under a pinned attachment, a network fault (the tunnel source gone) that must not stop the
//! daemon, `status` that is not fooled by a reused pid, and `anypop down`. Each test runs in a
//! private network namespace with its own pin root, removed however it ends.
mod common;
mod daemon_support;

use std::{net::UdpSocket, process::Command, time::Duration};

use common::{
    NetSetup, TestSteps, backend_network, enter_private_netns, in_thread, pop_network,
    require_root, sh,
};
use daemon_support::*;

/// Runs `f` on a thread of its own in a fresh network namespace (the namespace goes with the
/// thread, and with it every interface the test made).
fn in_private_netns(f: impl FnOnce() + Send + 'static) {
    in_thread(move || {
        enter_private_netns();
        f()
    })
}

/// Sends `n` UDP datagrams to the VIP at `port` out of t1, so that they arrive on t0 (where the
/// edge runs).
fn send_to_vip(port: u16, n: usize) {
    let mac = anypop::sys::iface::mac_of("t0").unwrap();
    let mac = mac.map(|b| format!("{b:02x}")).join(":");
    let _ = Command::new("ip")
        .args(["route", "replace", "203.0.113.10/32", "dev", "t1"])
        .status();
    let _ = Command::new("ip")
        .args([
            "neigh",
            "replace",
            "203.0.113.10",
            "lladdr",
            &mac,
            "dev",
            "t1",
            "nud",
            "permanent",
        ])
        .status();
    let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
    for _ in 0..n {
        sock.send_to(b"player", ("203.0.113.10", port)).unwrap();
    }
}

/// The total of verdict `reason` in `anypop status` output (0 when not listed).
fn verdict_total(status: &str, reason: &str) -> u64 {
    status
        .lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(reason)).then(|| w.next().and_then(|n| n.parse().ok()))?
        })
        .unwrap_or(0)
}

fn status(s: &Scratch, node: &str) -> String {
    let o = s.cmd(&["status", "--node", node]).output().unwrap();
    let t = output_text(&o);
    assert!(o.status.success(), "{t}");
    t
}

#[test]
fn a_pop_daemon_killed_after_a_first_start_leaves_the_edge_filtering_and_a_new_one_adopts_it() {
    require_root();
    in_private_netns(|| {
        NetSetup::new().lo_up().t0_pair().apply().unwrap();
        let s = Scratch::new("kill9");
        let (cfg, d) = s.start("pop-1", &pop_network("t0", "native"), &[]);
        d.signal(libc::SIGKILL);
        let (exit, _) = d.finish(Duration::from_secs(10));
        assert!(!exit.success());
        assert!(
            ip_link("t0").contains("prog/xdp"),
            "the edge must stay attached after kill -9: {}",
            ip_link("t0")
        );
        // It still decides: a service's packet is forwarded, another port dropped.
        send_to_vip(27015, 20);
        send_to_vip(9999, 20);
        // A pid file naming a live process that is not the daemon (pid reuse) fools no one.
        let run_dir = anypop::sys::rundir::run_dir(&s.pins.join("pop-1"));
        std::fs::write(run_dir.join("daemon.pid"), std::process::id().to_string()).unwrap();
        let st = status(&s, "pop-1");
        assert!(
            st.contains("daemon: not running; data plane left running on t0"),
            "{st}"
        );
        assert_eq!(verdict_total(&st, "drop_no_service"), 20, "{st}");
        let forwarded = verdict_total(&st, "fwd_ipip") + verdict_total(&st, "fwd_ipip_kernel");
        assert_eq!(forwarded, 20, "{st}");
        // A new daemon adopts the running program in place, then detaches on request.
        let mut d2 = Daemon::spawn(s.run_cmd("pop-1", &cfg, &["--detach"]));
        d2.wait_for("ready: node pop-1", READY_WITHIN);
        let log = d2.log();
        assert!(
            log.contains("adopted the running edge program on t0"),
            "{log}"
        );
        let (exit, log) = d2.stop();
        assert!(exit.success(), "{log}");
        assert!(!ip_link("t0").contains("prog/xdp"), "{}", ip_link("t0"));
    });
}

#[test]
fn a_backend_daemon_killed_leaves_decap_and_dsr_and_down_removes_everything_with_its_vip() {
    require_root();
    in_private_netns(|| {
        NetSetup::new().lo_up().t0_pair().apply().unwrap();
        let s = Scratch::new("kill9be");
        let (cfg, d) = s.start("be-1", &backend_network("t0"), &[]);
        d.signal(libc::SIGKILL);
        d.finish(Duration::from_secs(10));
        let pin_dir = s.pins.join("be-1");
        for link in ["link_t0", "link_tc_t0"] {
            let ifindex = anypop::dataplane::links::pinned_link_ifindex(&pin_dir.join(link))
                .unwrap_or_else(|e| panic!("{link}: {e}"));
            assert_eq!(
                ifindex,
                anypop::sys::iface::ifindex("t0", "test").unwrap(),
                "{link} still attached to t0"
            );
        }
        assert!(ip_link("t0").contains("prog/xdp"), "{}", ip_link("t0"));
        let lo_has_vip =
            || anypop::sys::addr::has_ipv4("lo", "203.0.113.10".parse().unwrap()).unwrap();
        assert!(lo_has_vip(), "the VIP stays for the game servers");
        // `down` is refused while a daemon runs, then removes links, maps, the VIP it added.
        let mut d2 = Daemon::spawn(s.run_cmd("be-1", &cfg, &[]));
        d2.wait_for("ready: node be-1", READY_WITHIN);
        let refused = s.cmd(&["down", "--node", "be-1"]).output().unwrap();
        assert!(!refused.status.success());
        assert!(
            output_text(&refused).contains("another anypop daemon"),
            "{}",
            output_text(&refused)
        );
        let (exit, log) = d2.stop();
        assert!(exit.success(), "{log}");
        assert!(
            lo_has_vip(),
            "a stop that leaves the data plane keeps the VIP"
        );
        let o = s.cmd(&["down", "--node", "be-1"]).output().unwrap();
        let t = output_text(&o);
        assert!(o.status.success(), "{t}");
        assert!(
            t.contains("node be-1 is down: 2 attachment(s) removed"),
            "{t}"
        );
        assert!(t.contains("VIPs removed from lo: 203.0.113.10"), "{t}");
        assert!(!lo_has_vip(), "{t}");
        assert!(!ip_link("t0").contains("prog/xdp"), "{}", ip_link("t0"));
        assert!(!pin_dir.exists(), "pins left: {t}");
        assert!(
            !anypop::sys::rundir::run_dir(&pin_dir).exists(),
            "run dir left: {t}"
        );
    });
}

#[test]
fn down_with_keep_state_keeps_the_state_maps_for_the_next_run() {
    require_root();
    in_private_netns(|| {
        NetSetup::new().lo_up().t0_pair().apply().unwrap();
        let s = Scratch::new("keep");
        let (_cfg, d) = s.start("pop-1", &pop_network("t0", "native"), &[]);
        d.signal(libc::SIGTERM);
        d.finish(Duration::from_secs(30));
        let o = s
            .cmd(&["down", "--node", "pop-1", "--keep-state"])
            .output()
            .unwrap();
        let t = output_text(&o);
        assert!(o.status.success(), "{t}");
        assert!(t.contains("kept: "), "{t}");
        let pin_dir = s.pins.join("pop-1");
        let mut left: Vec<String> = std::fs::read_dir(&pin_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["BUCKETS", "FLOWS", "NEWSRC"], "{t}");
        assert!(!ip_link("t0").contains("prog/xdp"), "{}", ip_link("t0"));
    });
}

#[test]
fn a_pinned_attachment_whose_interface_is_gone_is_replaced_not_blamed_on_another_program() {
    require_root();
    in_private_netns(|| {
        NetSetup::new().lo_up().t0_pair().apply().unwrap();
        let s = Scratch::new("defunct");
        let (cfg, d) = s.start("pop-1", &pop_network("t0", "native"), &[]);
        d.signal(libc::SIGTERM);
        d.finish(Duration::from_secs(30));
        // The interface goes away under the pinned link, and comes back under the same name.
        sh(&["ip", "link", "del", "t0"]);
        let pin = s.pins.join("pop-1").join("link_t0");
        assert_eq!(
            anypop::dataplane::links::pinned_link_ifindex(&pin).unwrap(),
            0,
            "the kernel reports the link defunct"
        );
        NetSetup::new().t0_pair().apply().unwrap();
        let mut d2 = Daemon::spawn(s.run_cmd("pop-1", &cfg, &["--detach"]));
        d2.wait_for("ready: node pop-1", READY_WITHIN);
        let log = d2.log();
        assert!(log.contains("is defunct: its interface is gone"), "{log}");
        assert!(log.contains("XDP attached in native mode"), "{log}");
        assert!(ip_link("t0").contains("prog/xdp"), "{}", ip_link("t0"));
        let (exit, log) = d2.stop();
        assert!(exit.success(), "{log}");
    });
}

#[test]
fn losing_the_tunnel_source_is_a_warning_and_a_retry_never_an_exit() {
    require_root();
    in_private_netns(|| {
        NetSetup::new().lo_up().t0_pair().apply().unwrap();
        let s = Scratch::new("probe");
        let (cfg, mut d) = s.start("pop-1", &pop_network("t0", "native"), &["--detach"]);
        sh(&["ip", "addr", "del", "198.51.100.1/24", "dev", "t0"]);
        // An apply re-probes at once (no need to wait for the 10 s period).
        let o = s
            .cmd(&["apply", "--node", "pop-1"])
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", output_text(&o));
        d.wait_for("next-hop probe failed", Duration::from_secs(20));
        sh(&["ip", "addr", "add", "198.51.100.1/24", "dev", "t0"]);
        d.wait_for("next-hop probes work again", Duration::from_secs(20));
        let (exit, log) = d.stop();
        assert!(exit.success(), "the daemon ran on: {log}");
    });
}

#[test]
fn a_service_manager_is_told_ready_once_the_data_plane_is_attached() {
    require_root();
    in_private_netns(|| {
        NetSetup::new().lo_up().t0_pair().apply().unwrap();
        let s = Scratch::new("notify");
        let cfg = s.file("net.toml", &pop_network("t0", "native"));
        // systemd's side of Type=notify: a datagram socket named by NOTIFY_SOCKET.
        let sock_path = s.dir.join("notify.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
        sock.set_read_timeout(Some(READY_WITHIN)).unwrap();
        let mut cmd = s.run_cmd("pop-1", &cfg, &["--detach"]);
        cmd.env("NOTIFY_SOCKET", &sock_path);
        let mut d = Daemon::spawn(cmd);
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("READY=1 within the deadline");
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(msg.contains("READY=1"), "{msg}");
        assert!(msg.contains(&format!("MAINPID={}", d.pid())), "{msg}");
        // By then the program runs on the interface.
        assert!(ip_link("t0").contains("prog/xdp"), "{}", ip_link("t0"));
        d.wait_for("ready: node pop-1", READY_WITHIN);
        let (exit, log) = d.stop();
        assert!(exit.success(), "{log}");
    });
}
