//! The `anypop` binary as an operator uses it: `check` on good and bad files, `run` attaching
//! natively (or refusing / falling back on a driver without native XDP), detaching on exit, and
//! leaving the data plane running by default and adopting it again. Each `run` happens in a private network namespace with its own pin root.
mod common;
mod daemon_support;

use std::{
    io::{Read, Write},
    path::PathBuf,
    process::{Command, Output},
};

use common::*;
use daemon_support::{Daemon, READY_WITHIN, Scratch, anypop, assert_says, output_text as text};

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/config/example.toml")
}

#[test]
fn check_accepts_the_example_and_compiles_a_node() {
    let o = anypop()
        .args(["check", "--config"])
        .arg(example())
        .args(["--node", "pop-nyc-1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_says(
        &o,
        "OK — 2 services, 4 rules, 1 profiles, 4 nodes (2 pops, 2 backends)",
    );
}

#[test]
fn check_reports_every_problem_with_lines_and_fails() {
    let dir = std::env::temp_dir().join(format!("anypop-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bad.toml");
    std::fs::write(
        &f,
        "[[service]]\nname = \"g\"\nvip = \"203.0.113.10\"\nprotocol = \"udp\"\nports = \"9-1\"\nbackends = [\"nobody\"]\n",
    )
    .unwrap();
    let o = anypop()
        .args(["check", "--config"])
        .arg(&f)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("bad.toml:5: service \"g\": ports: 9-1 is an empty range"),
        "{t}"
    );
    assert!(
        t.contains("bad.toml:6: service \"g\": backends: \"nobody\" is not a node"),
        "{t}"
    );
    let o = anypop()
        .args(["check", "--config", "/nonexistent/net.toml"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert_says(&o, "cannot read the network file");
}

/// Runs `anypop run` for 2 s inside a fresh namespace prepared by `setup`; returns its output and
/// what `ip link show` says afterwards.
fn run_in_netns(
    net: String,
    setup: fn(),
    extra: &'static [&'static str],
) -> (Output, String, PathBuf) {
    in_thread(move || {
        setup();
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!("anypop-run-{}-{seq}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("net.toml");
        std::fs::write(&cfg, net).unwrap();
        let pins = PathBuf::from(format!(
            "/sys/fs/bpf/anypop-cli-{}-{seq}",
            std::process::id()
        ));
        let o = anypop()
            .args([
                "run",
                "--node",
                "pop-1",
                "--duration",
                "2",
                "--interval",
                "1",
                "--config",
            ])
            .arg(&cfg)
            .arg("--pin-root")
            .arg(&pins)
            .args(extra)
            .output()
            .unwrap();
        let link = String::from_utf8_lossy(
            &Command::new("ip")
                .args(["link", "show"])
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned();
        std::fs::remove_dir_all(&dir).unwrap();
        (o, link, pins)
    })
}

#[test]
fn run_attaches_natively_logs_counters_and_detaches_on_exit() {
    require_root();
    let (o, link, pins) = run_in_netns(pop_network("t0", "native"), t0_netns, &["--detach"]);
    let _ = std::fs::remove_dir_all(&pins);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("interface t0: XDP attached in native mode"),
        "{t}"
    );
    assert!(
        t.contains("fwd ") && t.contains("/s"),
        "a counter summary line: {t}"
    );
    assert!(
        t.contains("state: flows 0 (0.0% of"),
        "fill levels are logged: {t}"
    );
    assert!(t.contains("detaching XDP"), "{t}");
    assert!(!link.contains("xdp"), "still attached after exit: {link}");
}

#[test]
fn by_default_the_data_plane_outlives_the_daemon_pinned() {
    require_root();
    let (o, link, pins) = run_in_netns(pop_network("t0", "native"), t0_netns, &[]);
    let pinned = pins.join("pop-1").join("link_t0").exists();
    let _ = std::fs::remove_dir_all(&pins);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(pinned, "link pin missing: {t}");
    assert!(link.contains("xdp"), "XDP should stay attached: {link}");
}

/// A bridge: a real device whose driver has no native XDP.
fn no_native() {
    NetSetup::enter_private()
        .cmd(&["ip", "link", "add", "d0", "type", "bridge"])
        .up("d0")
        .addr("198.51.100.1/24", "d0")
        .forwarding(&["all", "d0"])
        .apply()
        .unwrap();
}

#[test]
fn no_native_xdp_fails_clearly_unless_auto() {
    require_root();
    let (o, _, pins) = run_in_netns(pop_network("d0", "native"), no_native, &[]);
    let _ = std::fs::remove_dir_all(&pins);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(
        t.contains("cannot run XDP natively") && t.contains("xdp_mode = \"auto\""),
        "{t}"
    );
    let (o, link, pins) = run_in_netns(pop_network("d0", "auto"), no_native, &["--detach"]);
    let _ = std::fs::remove_dir_all(&pins);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("GENERIC mode"), "{t}");
    assert!(!link.contains("xdp"), "{link}");
}

#[test]
fn run_explains_missing_interface_and_forwarding() {
    require_root();
    let (o, _, pins) = run_in_netns(pop_network("nope0", "native"), t0_netns, &[]);
    let _ = std::fs::remove_dir_all(&pins);
    assert_says(&o, "interface nope0 (node pop-1) does not exist");
    fn no_forwarding() {
        NetSetup::enter_private()
            .veth_down("t0", "t1")
            .addr("198.51.100.1/24", "t0")
            .apply()
            .unwrap();
    }
    let (o, _, pins) = run_in_netns(pop_network("t0", "native"), no_forwarding, &[]);
    let _ = std::fs::remove_dir_all(&pins);
    assert_says(&o, "IPv4 forwarding is off on t0");
}

#[test]
fn run_on_a_backend_attaches_decap_and_dsr_and_cleans_up_its_vips() {
    require_root();
    // A backend node named pop-1 keeps run_in_netns' --node argument valid.
    let net = backend_named_network("pop-1", "t0");
    fn setup() {
        NetSetup::enter_private()
            .veth("t0", "t1")
            .lo_up()
            .addr("198.51.100.1/24", "t0")
            .forwarding(&["t0"])
            .apply()
            .unwrap();
    }
    let (o, link, pins) = run_in_netns(net, setup, &["--detach"]);
    let _ = std::fs::remove_dir_all(&pins);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("VIP 203.0.113.10 added to lo"), "{t}");
    assert!(
        t.contains("interface t0: decap attached (native XDP), dsr on TC egress"),
        "{t}"
    );
    assert!(t.contains("backend programs detached"), "{t}");
    assert!(!link.contains("xdp"), "{link}");
}

/// In the calling thread's new private namespace (with `t0_netns`), starts `anypop run`
/// on a fresh network file (with `extra` flags) and waits until it is ready; returns its scratch
/// (temp dir and pin root, removed on drop), file and process (stop it with SIGTERM:
/// [`stop_daemon`]).
fn start_daemon_in_private_netns(tag: &str, extra: &[&str]) -> (Scratch, PathBuf, Daemon) {
    t0_netns();
    let s = Scratch::new(tag);
    let cfg = s.file("net.toml", &pop_network("t0", "native"));
    let mut cmd = anypop();
    cmd.args(["run", "--node", "pop-1", "--interval", "1", "--config"])
        .arg(&cfg)
        .arg("--pin-root")
        .arg(&s.pins)
        .args(extra);
    let mut daemon = Daemon::spawn(cmd);
    daemon.wait_for("ready: node pop-1", READY_WITHIN);
    (s, cfg, daemon)
}

#[test]
fn sighup_applies_a_new_file_live_and_keeps_the_running_one_when_it_is_bad() {
    require_root();
    let out = in_thread(|| {
        // No file watch: only SIGHUP can make the edits live.
        let (_scratch, cfg, mut daemon) = start_daemon_in_private_netns("hup", &["--no-watch"]);
        // A good change: one more port.
        std::fs::write(&cfg, pop_network_ports("t0", "native", "27015-27016")).unwrap();
        daemon.signal(libc::SIGHUP);
        daemon.wait_for("(switch #2;", READY_WITHIN);
        // A bad change: must not replace the running config.
        std::fs::write(&cfg, pop_network_ports("t0", "native", "0")).unwrap();
        daemon.signal(libc::SIGHUP);
        daemon.wait_for("not applied, the running config stays", READY_WITHIN);
        daemon.stop()
    });
    let t = out.1;
    assert!(out.0.success(), "{t}");
    assert!(
        t.contains("live in slot 1 (switch #1)"),
        "first config: {t}"
    );
    assert!(
        t.contains("live in slot 0 (switch #2;"),
        "reloaded config: {t}"
    );
    assert!(t.contains("not applied, the running config stays"), "{t}");
    assert!(
        t.contains("ports: 0-0 is outside 1-65535"),
        "the reason is given: {t}"
    );
    assert!(!t.contains("switch #3"), "{t}");
}

#[test]
fn the_lab_demo_runs_and_its_players_survive_the_flood_and_the_flap() {
    require_root();
    let child = anypop()
        .args(["lab", "demo", "--duration", "8", "--players", "4"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let o = child.wait_with_output().unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("players survived the flood and the route flap"),
        "{t}"
    );
    assert!(t.contains("reached a game server: 0"), "{t}");
    assert!(t.contains("backend changes 0"), "{t}");
    assert!(t.contains(">>> route flap"), "{t}");
    // Everything it built is gone again: no namespace, pin directory or daemon lock named after
    // its process is left.
    let ns = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(!ns.contains(&format!("ap-{pid}-")), "left behind: {ns}");
    let leftovers: Vec<String> = std::fs::read_dir("/sys/fs/bpf")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("anypop-lab-{pid}-")))
        .collect();
    assert!(leftovers.is_empty(), "pins left behind: {leftovers:?}");
}

#[test]
fn apply_reaches_the_running_daemon_and_a_second_daemon_is_refused() {
    require_root();
    let (applied, bad, second, log, status, metrics) = in_thread(|| {
        let (scratch, cfg, daemon) = start_daemon_in_private_netns("apply", &[]);
        let (dir, pins) = (scratch.dir.clone(), scratch.pins.clone());
        let new = dir.join("new.toml");
        std::fs::write(&new, pop_network_ports("t0", "native", "27015-27020")).unwrap();
        let apply = |file: &PathBuf| {
            anypop()
                .args(["apply", "--node", "pop-1", "--config"])
                .arg(file)
                .arg("--pin-root")
                .arg(&pins)
                .output()
                .unwrap()
        };
        let applied = apply(&new);
        let badf = dir.join("bad.toml");
        std::fs::write(&badf, pop_network_ports("t0", "native", "9-1")).unwrap();
        let bad = apply(&badf);
        let status = anypop()
            .args(["status", "--node", "pop-1", "--pin-root"])
            .arg(&pins)
            .output()
            .unwrap();
        // The metrics endpoint (default: loopback of this namespace) serves every reason.
        let metrics = {
            let mut c = std::net::TcpStream::connect("127.0.0.1:9542").unwrap();
            c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
            let mut body = String::new();
            c.read_to_string(&mut body).unwrap();
            body
        };
        let second = anypop()
            .args(["run", "--node", "pop-1", "--duration", "1", "--config"])
            .arg(&cfg)
            .arg("--pin-root")
            .arg(&pins)
            .output()
            .unwrap();
        let log = daemon.stop();
        (applied, bad, second, log, status, metrics)
    });
    assert!(applied.status.success(), "{}", text(&applied));
    assert_says(&applied, "live in slot 0 (switch #2;");
    assert!(!bad.status.success());
    assert_says(&bad, "9-1 is an empty range");
    for r in anypop_common::verdict::Reason::ALL {
        let line = format!(
            "anypop_packets_total{{node=\"pop-1\",reason=\"{}\"}}",
            r.name()
        );
        assert!(metrics.contains(&line), "{line} missing from:\n{metrics}");
    }
    assert!(
        metrics.contains("anypop_config_version{node=\"pop-1\"} 2"),
        "{metrics}"
    );
    for line in [
        "anypop_xdp_attached{node=\"pop-1\",interface=\"t0\",mode=\"native\"} 1",
        "anypop_state_entries{node=\"pop-1\",table=\"flows\"} 0",
        "anypop_state_capacity{node=\"pop-1\",table=\"buckets\"}",
        "anypop_program_runs_total{node=\"pop-1\"}",
        "anypop_program_run_seconds_total{node=\"pop-1\"}",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    assert!(
        metrics.contains("anypop_service_packets_total{node=\"pop-1\",service=\"g\"} 0"),
        "{metrics}"
    );
    let st = text(&status);
    assert!(status.status.success(), "{st}");
    assert!(st.contains("daemon: running (pid"), "{st}");
    // The live generation's version: the applied file's hash and the switch counter.
    let hash: String = text(&applied)
        .split("config ")
        .nth(1)
        .map(|r| r.chars().take(16).collect())
        .unwrap_or_default();
    assert_eq!(hash.len(), 16, "{}", text(&applied));
    assert!(
        st.contains(&format!(
            "config: {hash} (hash of the network file), switch #2, live slot 0"
        )),
        "{st}"
    );
    assert!(st.contains("state: flows 0 of"), "{st}");
    assert!(!second.status.success());
    assert_says(&second, "another anypop daemon");
    assert!(log.0.success(), "{}", log.1);
    assert!(
        !log.1.contains("switch #3"),
        "the bad file never reached the daemon: {}",
        log.1
    );
}

/// `anypop run` of `node` for a second (no metrics listener) with this file and pin root.
fn run_for_a_second(
    cfg: &std::path::Path,
    pins: &std::path::Path,
    node: &str,
    extra: &[&str],
) -> Output {
    anypop()
        .args(["run", "--node", node, "--duration", "1", "--metrics", "off"])
        .arg("--config")
        .arg(cfg)
        .arg("--pin-root")
        .arg(pins)
        .args(extra)
        .output()
        .unwrap()
}

/// Starts `anypop lab up` and waits until the lab is built; returns the child and its output
/// (kept open: the lab reports its clean-up there).
fn lab_up() -> (std::process::Child, std::process::ChildStdout) {
    let mut child = anypop()
        .args(["lab", "up"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("Ctrl-C removes everything") {
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "lab up ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    (child, out)
}

/// Namespaces, pin directories and daemons of the lab of process `pid`.
fn lab_traces(pid: u32) -> (usize, usize, usize) {
    let ns = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .matches(&format!("ap-{pid}-"))
    .count();
    let pins = std::fs::read_dir("/sys/fs/bpf")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("anypop-lab-{pid}-"))
        })
        .count();
    let daemons = String::from_utf8_lossy(
        &Command::new("pgrep")
            .args(["-f", &format!("anypop-lab-{pid}-")])
            .output()
            .unwrap()
            .stdout,
    )
    .lines()
    .count();
    (ns, pins, daemons)
}

#[test]
fn a_killed_lab_leaves_no_daemon_and_the_next_lab_removes_its_leftovers() {
    require_root();
    // A lab killed outright (no chance to clean up): its daemons die with it, its namespaces and
    // pins stay behind...
    let (mut first, _out) = lab_up();
    let pid = first.id();
    let (ns, pins, daemons) = lab_traces(pid);
    assert!(
        ns >= 7 && pins == 1 && daemons == 4,
        "built: {ns} ns, {pins} pins, {daemons} daemons"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while lab_traces(pid).2 != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemons of a killed lab stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // ... until the next lab starts; that one removes everything itself on Ctrl-C.
    let (mut second, mut out) = lab_up();
    assert_eq!(
        lab_traces(pid),
        (0, 0, 0),
        "leftovers of the killed lab are gone"
    );
    let pid2 = second.id();
    unsafe { libc::kill(pid2 as i32, libc::SIGINT) };
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let status = second.wait().unwrap();
    assert!(status.success(), "{rest}");
    assert!(rest.contains("cleaning up"), "{rest}");
    assert_eq!(lab_traces(pid2), (0, 0, 0), "Ctrl-C removes the lab");
}

#[test]
fn a_restarted_daemon_adopts_the_running_data_plane_and_detach_removes_it() {
    require_root();
    in_thread(|| {
        t0_netns();
        let scratch = Scratch::new("adopt");
        let (pins, dir) = (scratch.pins.clone(), scratch.dir.clone());
        let cfg = dir.join("net.toml");
        std::fs::write(&cfg, pop_network("t0", "native")).unwrap();
        let run = |extra: &[&str]| run_for_a_second(&cfg, &pins, "pop-1", extra);
        let prog_id = || {
            let out = Command::new("ip")
                .args(["-d", "link", "show", "t0"])
                .output()
                .unwrap();
            let t = String::from_utf8_lossy(&out.stdout).into_owned();
            t.split("prog/xdp id ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .map(str::to_owned)
        };
        let first = run(&[]);
        assert!(first.status.success(), "{}", text(&first));
        let old = prog_id().expect("left running after the first daemon");
        // The second daemon replaces the program on the pinned link, then detaches on exit.
        let second = run(&["--detach"]);
        let t = text(&second);
        assert!(second.status.success(), "{t}");
        assert!(t.contains("adopted the running edge program on t0"), "{t}");
        assert!(t.contains("detaching XDP"), "{t}");
        assert_eq!(prog_id(), None, "--detach removed the program (was {old})");
        assert!(
            !pins.join("pop-1").join("link_t0").exists(),
            "the link pin is gone"
        );
    });
}

#[test]
fn an_edited_network_file_is_applied_without_a_signal_and_a_bad_edit_is_not() {
    require_root();
    let out = in_thread(|| {
        let (_scratch, cfg, mut daemon) = start_daemon_in_private_netns("watch", &[]);
        std::fs::write(&cfg, pop_network_ports("t0", "native", "27015-27017")).unwrap();
        daemon.wait_for("(switch #2;", READY_WITHIN);
        std::fs::write(&cfg, pop_network_ports("t0", "native", "70000")).unwrap();
        daemon.wait_for("not applied, the running config stays", READY_WITHIN);
        daemon.stop()
    });
    let t = out.1;
    assert!(out.0.success(), "{t}");
    assert!(t.contains("changed on disk: applying it"), "{t}");
    assert!(
        t.contains("live in slot 0 (switch #2;"),
        "the edit is live: {t}"
    );
    assert!(t.contains("not applied, the running config stays"), "{t}");
    assert!(
        !t.contains("switch #3"),
        "the bad edit replaced nothing: {t}"
    );
}

#[test]
fn a_pinned_attachment_running_another_program_is_refused() {
    require_root();
    in_thread(|| {
        t0_netns();
        let scratch = Scratch::new("foreign");
        let (pins, dir) = (scratch.pins.clone(), scratch.dir.clone());
        // One file, two nodes on t0: a backend (decap) and the POP.
        let cfg = dir.join("net.toml");
        std::fs::write(
            &cfg,
            pop_network("t0", "native")
                + &sample::backend("be-9", "t0", sample::TUNNEL).to_string(),
        )
        .unwrap();
        let run = |node: &str| run_for_a_second(&cfg, &pins, node, &[]);
        // The backend leaves decap running on t0, pinned; its pin is then found where the POP's
        // own attachment would be.
        let be = run("be-9");
        assert!(be.status.success(), "{}", text(&be));
        std::fs::create_dir_all(pins.join("pop-1")).unwrap();
        std::fs::rename(
            pins.join("be-9").join("link_t0"),
            pins.join("pop-1").join("link_t0"),
        )
        .unwrap();
        let pop = run("pop-1");
        let t = text(&pop);
        assert!(!pop.status.success(), "{t}");
        assert!(
            t.contains("runs program \"decap\"") && t.contains("not anypop's \"edge\""),
            "{t}"
        );
        assert!(
            t.contains("does not replace programs it did not ship"),
            "{t}"
        );
    });
}

#[test]
fn a_data_plane_of_another_layout_version_is_not_touched_and_explained() {
    require_root();
    in_thread(|| {
        t0_netns();
        let scratch = Scratch::new("layout");
        let (root, dir) = (scratch.pins.clone(), scratch.dir.clone());
        let cfg = dir.join("net.toml");
        std::fs::write(&cfg, pop_network("t0", "native")).unwrap();
        let run = |layout: &str| run_for_a_second(&cfg, &root.join(layout), "pop-1", &[]);
        // An "older version" left its data plane running under layout v1 ...
        let old = run("v1");
        assert!(old.status.success(), "{}", text(&old));
        // ... the newer one (layout v2) does not touch it and says why it cannot attach.
        let new = run("v2");
        let t = text(&new);
        assert!(!new.status.success(), "{t}");
        assert!(t.contains("another layout version"), "{t}");
        assert!(
            t.contains(&format!("{}", root.join("v1").join("pop-1").display())),
            "{t}"
        );
        assert!(
            root.join("v1").join("pop-1").join("link_t0").exists(),
            "old pins untouched"
        );
    });
}
