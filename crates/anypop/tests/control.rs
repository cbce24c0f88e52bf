//! `anypop apply` against a running daemon, as operators (and their scripts) use it: two applies
//! at once both land, in turn, each told its own outcome; a daemon that dies mid-request fails
//! the client at once; a change that takes a restart is refused unless allowed; the file an
//! apply hands over becomes the daemon's own (the one the watch follows).
mod common;
mod daemon_support;

use std::{path::Path, process::Output, time::Duration};

use common::{in_thread, pop_network, pop_network_ports, require_root, t0_netns};
use daemon_support::*;

fn in_private_netns(f: impl FnOnce() + Send + 'static) {
    in_thread(move || {
        t0_netns();
        f()
    })
}

/// `anypop apply` of `cfg` to pop-1, its output captured (also when spawned).
fn apply(s: &Scratch, cfg: &Path, extra: &[&str]) -> std::process::Command {
    let mut c = s.cmd(&["apply", "--node", "pop-1"]);
    c.arg("--config")
        .arg(cfg)
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    c
}

fn with_ports(ports: &str) -> String {
    pop_network_ports("t0", "native", ports)
}

/// The switch number an apply's answer names ("… (switch #N; …").
fn switch_of(o: &Output) -> u32 {
    let t = output_text(o);
    t.split("(switch #")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no switch number in: {t}"))
}

#[test]
fn two_applies_at_once_both_land_in_turn_and_each_hears_its_own_outcome() {
    require_root();
    in_private_netns(|| {
        let s = Scratch::new("concurrent");
        let (_cfg, d) = s.start("pop-1", &pop_network("t0", "native"), &["--no-watch"]);
        let a = s.file("a.toml", &with_ports("27015-27016"));
        let b = s.file("b.toml", &with_ports("27015-27017"));
        let (ca, cb) = (
            apply(&s, &a, &[]).spawn().unwrap(),
            apply(&s, &b, &[]).spawn().unwrap(),
        );
        let (oa, ob) = (
            ca.wait_with_output().unwrap(),
            cb.wait_with_output().unwrap(),
        );
        for (o, name) in [(&oa, "a.toml"), (&ob, "b.toml")] {
            let t = output_text(o);
            assert!(o.status.success(), "{t}");
            assert!(
                t.contains(&format!("applied {}", s.dir.join(name).display())),
                "{t}"
            );
        }
        let mut switches = [switch_of(&oa), switch_of(&ob)];
        switches.sort();
        assert_eq!(switches, [2, 3], "both applied, one after the other");
        let (exit, log) = d.stop();
        assert!(exit.success(), "{log}");
        assert_eq!(log.matches("applied ").count(), 2, "{log}");
    });
}

#[test]
fn apply_fails_at_once_when_the_daemon_dies_mid_request() {
    require_root();
    in_private_netns(|| {
        let s = Scratch::new("dies");
        let (cfg, d) = s.start("pop-1", &pop_network("t0", "native"), &["--no-watch"]);
        // Frozen, the daemon cannot answer; the request is queued on its socket.
        d.signal(libc::SIGSTOP);
        let started = std::time::Instant::now();
        let client = apply(&s, &cfg, &[]).spawn().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !has_connected_socket(client.id()) {
            assert!(
                std::time::Instant::now() < deadline,
                "the client never connected"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d.signal(libc::SIGKILL);
        let o = client.wait_with_output().unwrap();
        let t = output_text(&o);
        assert!(!o.status.success(), "{t}");
        assert!(t.contains("closed the connection without answering"), "{t}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "took {:?}",
            started.elapsed()
        );
        d.finish(Duration::from_secs(10));
    });
}

/// Whether process `pid` holds a connected Unix stream socket (its connect to the daemon went
/// through: the kernel queues it even while the daemon is frozen).
fn has_connected_socket(pid: u32) -> bool {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    l.strip_prefix("socket:[")?
                        .strip_suffix(']')
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    // Num RefCount Protocol Flags Type St Inode [Path]; St 03 = connected. The table of this
    // thread's network namespace (/proc/net is the main thread's).
    std::fs::read_to_string("/proc/thread-self/net/unix")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.len() >= 7 && w[5] == "03" && inodes.iter().any(|i| i == w[6])
        })
}

#[test]
fn a_change_that_takes_a_restart_is_refused_whole_unless_allowed() {
    require_root();
    in_private_netns(|| {
        let s = Scratch::new("restart");
        let (_cfg, d) = s.start("pop-1", &pop_network("t0", "native"), &["--no-watch"]);
        let bigger = s.file(
            "bigger.toml",
            &format!(
                "[defaults]\nflow_table_size = 50000\n{}",
                with_ports("27015-27018")
            ),
        );
        let o = apply(&s, &bigger, &[]).output().unwrap();
        let t = output_text(&o);
        assert!(!o.status.success(), "{t}");
        assert!(t.contains("take a restart of the daemon"), "{t}");
        assert!(t.contains("flow_table_size"), "{t}");
        assert!(
            !d.log().contains("(switch #2;"),
            "nothing was applied: {}",
            d.log()
        );
        let o = apply(&s, &bigger, &["--allow-restart-needed"])
            .output()
            .unwrap();
        let t = output_text(&o);
        assert!(o.status.success(), "{t}");
        assert!(t.contains("(switch #2;"), "{t}");
        assert!(
            t.contains("not live until the daemon restarts: flow_table_size"),
            "{t}"
        );
        let (exit, log) = d.stop();
        assert!(exit.success(), "{log}");
    });
}

#[test]
fn the_file_an_apply_hands_over_becomes_the_one_the_daemon_watches() {
    require_root();
    in_private_netns(|| {
        let s = Scratch::new("handover");
        let (cfg, mut d) = s.start("pop-1", &pop_network("t0", "native"), &[]);
        let other = s.file("other.toml", &with_ports("27015-27016"));
        let o = apply(&s, &other, &[]).output().unwrap();
        let t = output_text(&o);
        assert!(o.status.success(), "{t}");
        assert!(
            t.contains(&format!(
                "the daemon's network file is now {}",
                other.display()
            )),
            "{t}"
        );
        // The old file is no longer followed; the new one is.
        std::fs::write(&cfg, with_ports("27015-27019")).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        std::fs::write(&other, with_ports("27015-27017")).unwrap();
        d.wait_for("other.toml changed on disk: applying it", READY_WITHIN);
        d.wait_for("(switch #3;", READY_WITHIN);
        let (exit, log) = d.stop();
        assert!(exit.success(), "{log}");
        assert!(!log.contains("net.toml changed on disk"), "{log}");
        assert!(!log.contains("switch #4"), "{log}");
    });
}
