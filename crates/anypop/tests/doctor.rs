//! `anypop doctor` as an operator uses it: the real binary, run inside a private network namespace
//! that each test creates with its own interfaces (the machine's own interfaces are never probed).
//! The namespace, and every interface in it, disappears with the test's thread, also on a panic.
mod common;
mod daemon_support;

use std::process::{Command, Output};

use common::*;
use daemon_support::{assert_says, output_text as text};

/// `ip -d link show` of every interface (in the calling thread's namespace).
fn links() -> String {
    String::from_utf8_lossy(
        &Command::new("ip")
            .args(["-d", "link", "show"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned()
}

fn doctor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_anypop"))
        .arg("doctor")
        .args(args)
        .output()
        .unwrap()
}

fn veth_pair() {
    NetSetup::new().veth("t0", "t1").apply().unwrap();
}

/// No XDP program (of the probe or anyone) is left on any interface of the namespace.
fn assert_nothing_attached() {
    let l = links();
    assert!(
        !l.contains("prog/xdp") && !l.contains(" xdp"),
        "an XDP program stayed attached: {l}"
    );
}

#[test]
fn a_veth_runs_native_xdp_and_the_probe_is_detached() {
    let (o, after) = in_private_netns(|| {
        veth_pair();
        (doctor(&["--interface", "t0"]), links())
    });
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("[ ok ] native XDP on t0 (driver veth)"), "{t}");
    assert!(t.contains("[ ok ] t0 exists"), "{t}");
    assert!(
        t.contains("[ ok ] BPF programs load and pass the verifier"),
        "{t}"
    );
    // veth's TX checksum offload is on by default: a warning with the README's fix.
    assert!(
        t.contains("[warn] TX checksum offload is on on veth t0")
            && t.contains("fix: ethtool -K t0 tx off"),
        "{t}"
    );
    assert!(t.contains("[warn] MTU 1500 on t0"), "{t}");
    // Its peer runs no XDP program: frames sent back with XDP_TX would wait in t1's ring.
    assert!(
        t.contains("[warn] veth peer t1 of t0 runs no XDP program")
            && t.contains("fix: attach any XDP program to t1"),
        "{t}"
    );
    assert!(!t.contains("[FAIL]"), "{t}");
    assert!(t.contains(", 0 FAIL — ready"), "{t}");
    // Groups in order: the kernel, then the interface.
    let kernel = t.find("kernel\n").expect("kernel group");
    let iface = t.find("interface t0\n").expect("interface group");
    assert!(kernel < iface, "{t}");
    assert!(
        !after.contains("prog/xdp") && !after.contains(" xdp"),
        "the probe stayed attached: {after}"
    );
}

#[test]
fn a_missing_interface_fails_with_what_to_do() {
    let o = in_private_netns(|| doctor(&["--interface", "nosuch0"]));
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains(
            "[FAIL] interface nosuch0 does not exist — fix: check the name against `ip -br link`"
        ),
        "{t}"
    );
    assert!(
        t.contains(", 1 FAIL — not ready: fix every FAIL above"),
        "{t}"
    );
}

/// A device whose driver has no native XDP: a dummy where the kernel has the module, else a
/// bridge (this machine's kernel has no dummy driver).
fn no_native_device() {
    let dummy = Command::new("ip")
        .args(["link", "add", "d0", "type", "dummy"])
        .output()
        .unwrap();
    if !dummy.status.success() {
        sh(&["ip", "link", "add", "d0", "type", "bridge"]);
    }
    sh(&["ip", "link", "set", "d0", "up"]);
}

#[test]
fn no_native_xdp_fails_with_a_fix_and_leaves_nothing_attached() {
    let o = in_private_netns(|| {
        no_native_device();
        let o = doctor(&["--interface", "d0"]);
        assert_nothing_attached();
        o
    });
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("[FAIL] no native XDP on d0 (driver "), "{t}");
    assert!(t.contains("generic XDP works"), "{t}");
    assert!(
        t.contains("fix: use a NIC whose driver runs XDP natively, or set xdp_mode = \"auto\" for the node using it"),
        "{t}"
    );
}

#[test]
fn an_attached_program_is_not_replaced_by_the_probe() {
    let (o, after) = in_private_netns(|| {
        veth_pair();
        let mut b = anypop::dataplane::baseline::Baseline::load().unwrap_or_else(|e| panic!("{e}"));
        b.attach("base_pass", "t0")
            .unwrap_or_else(|e| panic!("{e}"));
        let o = doctor(&["--interface", "t0"]);
        let after = links();
        drop(b);
        assert_nothing_attached();
        (o, after)
    });
    let t = text(&o);
    assert!(
        t.contains("[warn] native XDP on t0 (driver veth) not probed: an XDP program (id "),
        "{t}"
    );
    assert!(t.contains("is already attached in native mode"), "{t}");
    assert!(t.contains("ip link set dev t0 xdp off"), "{t}");
    assert!(
        after.contains("base_pass"),
        "our program must still be attached: {after}"
    );
}

#[test]
fn a_pop_without_forwarding_fails_with_the_sysctl_fix_that_works() {
    let dir = TempDir::new("pop");
    let cfg = dir.0.join("net.toml");
    std::fs::write(&cfg, pop_network("t0", "native")).unwrap();
    let cfg_s = cfg.to_str().unwrap().to_owned();
    let (before, fixed) = in_private_netns(move || {
        veth_pair();
        sh(&["ip", "addr", "add", "198.51.100.1/24", "dev", "t0"]);
        sh(&["sysctl", "-q", "-w", "net.ipv4.conf.t0.forwarding=0"]);
        let args = ["--config", cfg_s.as_str(), "--node", "pop-1"];
        let before = doctor(&args);
        // Apply the fix the doctor printed, and ask again.
        sh(&[
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.conf.all.forwarding=1",
            "net.ipv4.conf.t0.forwarding=1",
        ]);
        let fixed = doctor(&args);
        assert_nothing_attached();
        (before, fixed)
    });
    let t = text(&before);
    assert_eq!(before.status.code(), Some(1), "{t}");
    assert!(
        t.contains("[FAIL] IPv4 forwarding is off on t0")
            && t.contains(
                "fix: sysctl -w net.ipv4.conf.all.forwarding=1 net.ipv4.conf.t0.forwarding=1"
            ),
        "{t}"
    );
    assert!(t.contains("node pop-1 (pop)\n"), "{t}");
    assert!(t.contains("[ ok ] native XDP on t0 (driver veth)"), "{t}");
    assert!(
        t.contains("[ ok ] tunnel_source 198.51.100.1 is an address of this machine"),
        "{t}"
    );
    assert!(
        t.contains("[ ok ] backend be-1 (198.51.100.21) reachable out of t0 (on-link)"),
        "{t}"
    );
    let t = text(&fixed);
    assert_eq!(fixed.status.code(), Some(0), "{t}");
    assert!(t.contains("[ ok ] IPv4 forwarding on t0"), "{t}");
}

#[test]
fn a_pop_on_a_device_without_native_xdp_warns_when_it_may_fall_back() {
    let dir = TempDir::new("auto");
    let cfg = dir.0.join("net.toml");
    std::fs::write(&cfg, pop_network("t0", "auto").replace("\"t0\"", "\"d0\"")).unwrap();
    let cfg_s = cfg.to_str().unwrap().to_owned();
    let o = in_private_netns(move || {
        no_native_device();
        sh(&["ip", "addr", "add", "198.51.100.9/24", "dev", "d0"]);
        sh(&["sysctl", "-q", "-w", "net.ipv4.conf.d0.forwarding=1"]);
        let o = doctor(&["--config", cfg_s.as_str(), "--node", "pop-1"]);
        assert_nothing_attached();
        o
    });
    let t = text(&o);
    assert!(
        t.contains("[warn] no native XDP on d0")
            && t.contains("node pop-1 falls back to generic XDP"),
        "{t}"
    );
    // tunnel_source 198.51.100.1 is not on this machine here.
    assert!(
        t.contains("[FAIL] tunnel_source 198.51.100.1 is not an address of this machine — fix: add it to an interface"),
        "{t}"
    );
    assert_eq!(o.status.code(), Some(1), "{t}");
}

#[test]
fn mistakes_on_the_command_line_say_what_to_do() {
    let dir = TempDir::new("cli");
    let cfg = dir.0.join("net.toml");
    std::fs::write(&cfg, pop_network("t0", "native")).unwrap();
    let o = doctor(&["--config", cfg.to_str().unwrap(), "--node", "nobody"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains(
            "no node named \"nobody\"; the file defines: pop-1, be-1. Pass one of them with --node"
        ),
        "{}",
        text(&o)
    );
    let o = doctor(&["--config", "/nonexistent/net.toml", "--node", "pop-1"]);
    assert!(!o.status.success());
    assert_says(&o, "cannot read the network file");
    let o = doctor(&["--config", cfg.to_str().unwrap()]);
    assert!(!o.status.success());
    assert_says(&o, "--node");
}

#[test]
fn without_arguments_only_the_kernel_is_checked() {
    let o = in_private_netns(|| doctor(&[]));
    let t = text(&o);
    assert!(t.starts_with("kernel\n"), "{t}");
    assert!(!t.contains("interface "), "{t}");
    assert!(!t.contains("node "), "{t}");
    assert!(t.contains("[ ok ] running as root"), "{t}");
    assert!(t.contains("[ ok ] bpffs mounted at /sys/fs/bpf"), "{t}");
    assert!(t.contains("BPF JIT"), "{t}");
    assert!(t.lines().last().unwrap().starts_with("doctor: "), "{t}");
}

#[test]
fn a_backend_without_its_address_fails_and_forwarding_off_is_a_warning() {
    let dir = TempDir::new("be");
    let cfg = dir.0.join("net.toml");
    std::fs::write(
        &cfg,
        pop_network("t0", "native").replace("\"eth0\"", "\"t0\""),
    )
    .unwrap();
    let cfg_s = cfg.to_str().unwrap().to_owned();
    let o = in_private_netns(move || {
        veth_pair();
        sh(&["sysctl", "-q", "-w", "net.ipv4.conf.t0.forwarding=0"]);
        let o = doctor(&["--config", cfg_s.as_str(), "--node", "be-1"]);
        assert_nothing_attached();
        o
    });
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("node be-1 (backend)\n"), "{t}");
    assert!(t.contains("[ ok ] native XDP on t0 (driver veth)"), "{t}");
    assert!(
        t.contains("[warn] IPv4 forwarding is off on t0: the DSR program")
            && t.contains("fix: sysctl -w net.ipv4.conf.t0.forwarding=1"),
        "{t}"
    );
    assert!(
        t.contains("[FAIL] address 198.51.100.21 is not an address of this machine — fix: add it to an interface (`ip addr add 198.51.100.21/32 dev IF`) or correct `address` of node be-1"),
        "{t}"
    );
}

#[test]
fn json_carries_the_same_verdicts_and_exit_code() {
    let o = in_private_netns(|| doctor(&["--json", "--interface", "nosuch0"]));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["passed"], false);
    assert_eq!(j["fail"], 1);
    let iface = &j["groups"][1];
    assert_eq!(iface["title"], "interface nosuch0");
    assert_eq!(iface["checks"][0]["verdict"], "fail");
    assert!(
        iface["checks"][0]["fix"]
            .as_str()
            .unwrap()
            .contains("ip -br link")
    );
}
