//! `anypop trace` against the lab's running POP: for every packet of a capture, the verdict trace
//! prints is the verdict the attached program gave the same packet on the wire.
mod common;

use std::time::Duration;

use anypop::{
    dataplane::trafficgen::TrafficGen,
    lab::topology::{Lab, Topology},
};
use anypop_common::verdict::Reason;
use common::*;

/// The default lab, running this build's `anypop`.
fn lab() -> Lab {
    Lab::build(
        Topology::default(),
        std::path::Path::new(env!("CARGO_BIN_EXE_anypop")),
        &|_| {},
    )
    .unwrap()
}

/// The packets: each with the reason the POP must give it.
fn packets() -> Vec<(Vec<u8>, Reason)> {
    let vip = [203, 0, 113, 10];
    let mut truncated = udp4([100, 64, 0, 12], 40000, vip, 27015, b"cut");
    truncated.truncate(14 + 20 + 4);
    vec![
        (
            udp4([100, 64, 0, 10], 40000, vip, 27015, b"tick"),
            Reason::FwdIpip,
        ),
        (
            udp4([198, 18, 3, 4], 1234, vip, 27015, b"flood"),
            Reason::DropRule,
        ),
        (
            udp4([100, 64, 0, 10], 40000, vip, 9999, b"x"),
            Reason::DropNoService,
        ),
        (
            udp4([100, 64, 0, 10], 40000, [10, 9, 9, 9], 53, b"x"),
            Reason::PassNotVip,
        ),
        (
            tcp4([100, 64, 0, 11], 41000, vip, 27016, true, false),
            Reason::FwdIpip,
        ),
        (truncated, Reason::DropMalformed),
        (icmp4_echo([100, 64, 0, 10], vip), Reason::DropNoService),
    ]
}

/// The one reason whose counter moved by one on `node` while `f` ran (retried when background
/// traffic moved another counter at the same time).
fn verdict_on_the_wire(lab: &Lab, node: &str, send: &dyn Fn()) -> Reason {
    for _ in 0..5 {
        let before = lab.verdicts(node).unwrap();
        send();
        std::thread::sleep(Duration::from_millis(100));
        let after = lab.verdicts(node).unwrap();
        let moved: Vec<(Reason, u64)> = Reason::ALL
            .iter()
            .map(|&r| (r, after.get(r).packets - before.get(r).packets))
            .filter(|(_, n)| *n > 0)
            .collect();
        if let [(r, 1)] = moved[..] {
            return r;
        }
    }
    panic!("no clean reading of the wire verdict");
}

#[test]
fn trace_gives_each_packet_the_verdict_the_attached_program_gave_it() {
    require_root();
    let lab = lab();
    let pkts = packets();
    // On the wire: each frame sent once into POP 1's transit link.
    let at1 = Lab::ifindex(&lab.attacker, "at1").unwrap();
    let mut wire = Vec::new();
    for (frame, expected) in &pkts {
        let f = frame.clone();
        let r = verdict_on_the_wire(&lab, "pop-1", &|| {
            let f = f.clone();
            lab.attacker
                .run(move || {
                    let mut g = TrafficGen::load().unwrap();
                    g.configure([0, 0, 0, 0].into(), 32, false).unwrap();
                    g.send(&f, at1, 1).unwrap();
                })
                .unwrap();
        });
        assert_eq!(r, *expected, "the attached program's verdict");
        wire.push(r);
    }
    // The same frames as a capture, traced.
    let pcap = lab.dir.join("in.pcap");
    {
        let file = std::fs::File::create(&pcap).unwrap();
        let mut w = pcap_file::pcap::PcapWriter::new(file).unwrap();
        for (i, (f, _)) in pkts.iter().enumerate() {
            w.write_packet(&pcap_file::pcap::PcapPacket::new(
                Duration::from_millis(i as u64),
                f.len() as u32,
                f,
            ))
            .unwrap();
        }
    }
    let out = lab.pops[0]
        .command(env!("CARGO_BIN_EXE_anypop"))
        .unwrap()
        .args(["trace", "--node", "pop-1", "--pcap"])
        .arg(&pcap)
        .arg("--config")
        .arg(&lab.network_path)
        .arg("--pin-root")
        .arg(&lab.pin_root)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let traced: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            Reason::ALL
                .iter()
                .map(|r| r.name())
                .find(|n| l.split_whitespace().any(|w| w == *n))
                .unwrap_or("none")
        })
        .collect();
    let wire: Vec<&str> = wire.iter().map(|r| r.name()).collect();
    eprintln!("{text}");
    assert_eq!(traced, wire, "trace agrees with the wire:\n{text}");
    // And it says who decided.
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
    assert!(
        lines[0].contains("service=game") && lines[0].contains("backend=be-"),
        "{text}"
    );
    assert!(
        text.contains("→ ipip 10.0.1.2 → 10.1."),
        "the encapsulated packet is shown: {text}"
    );
    assert!(lines[1].contains("rule=blocklist"), "{text}");
    assert!(lines[4].contains("service=login"), "{text}");
}

/// The packet comments of a pcapng file, as tshark reads them.
fn tshark_comments(path: &std::path::Path) -> Vec<String> {
    let out = std::process::Command::new("tshark")
        .args(["-r"])
        .arg(path)
        .args(["-T", "fields", "-e", "frame.comment"])
        .output()
        .expect("tshark (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn capture_writes_pcapng_whose_comments_carry_verdict_reason_rule_and_service() {
    require_root();
    let lab = lab();
    let servers = anypop::lab::traffic::Servers::start(&lab).unwrap();
    let players = anypop::lab::traffic::Players::start(&lab, 0, 4, 64).unwrap();
    let flood = anypop::lab::traffic::RunningFlood::start(
        &lab,
        anypop::dataplane::trafficgen::FloodKind::Udp,
        50_000,
        None,
    )
    .unwrap();
    let capture = |file: &str, extra: &[&str]| {
        let path = lab.dir.join(file);
        let out = lab.pops[0]
            .command(env!("CARGO_BIN_EXE_anypop"))
            .unwrap()
            .args([
                "capture",
                "--node",
                "pop-1",
                "--count",
                "20",
                "--duration",
                "20",
                "-w",
            ])
            .arg(&path)
            .arg("--config")
            .arg(&lab.network_path)
            .arg("--pin-root")
            .arg(&lab.pin_root)
            .args(extra)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("20 packets written"), "{text}");
        tshark_comments(&path)
    };
    // The flood, by reason: every sample is the blocklist's drop.
    let drops = capture("drops.pcapng", &["--reason", "drop_rule"]);
    assert_eq!(drops.len(), 20, "{drops:?}");
    for c in &drops {
        assert_eq!(
            c,
            "verdict=DROP reason=drop_rule rule=blocklist service=game"
        );
    }
    // The players, by reason and service: forwarded to a backend.
    let fwd = capture("fwd.pcapng", &["--reason", "fwd_ipip", "--service", "game"]);
    assert_eq!(fwd.len(), 20, "{fwd:?}");
    for c in &fwd {
        assert!(
            c.starts_with("verdict=TX reason=fwd_ipip")
                || c.starts_with("verdict=REDIRECT reason=fwd_ipip"),
            "{c}"
        );
        assert!(c.ends_with("service=game"), "{c}");
    }
    flood.stop(&lab).unwrap();
    players.stop().unwrap();
    servers.stop().unwrap();
    // Capture is off again once it ended.
    let cfg: aya::maps::Array<aya::maps::MapData, anypop_common::layout::CaptureConfig> =
        aya::maps::Array::try_from(aya::maps::Map::Array(
            aya::maps::MapData::from_pin(lab.pin_dir("pop-1").join("CAPTURE")).unwrap(),
        ))
        .unwrap();
    assert_eq!(cfg.get(&0, 0).unwrap().reasons, 0, "capture left on");
}

#[test]
fn capture_refuses_unknown_reasons_and_services_with_the_valid_ones() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_anypop"))
        .args([
            "capture",
            "--node",
            "pop-1",
            "-w",
            "/dev/null",
            "--reason",
            "drop_everything",
        ])
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        t.contains("not a verdict reason") && t.contains("drop_rule"),
        "{t}"
    );
}
