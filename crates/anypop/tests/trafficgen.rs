//! The lab's traffic generator against the real edge: a random-source flood sent with live
//! frames into a veth whose peer runs the POP. Every frame the generator sent is accounted for by
//! the POP's counters (or by the veth as dropped on overflow).
mod common;

use anypop::{config, daemon::Pop, dataplane::trafficgen::TrafficGen};
use anypop_common::verdict::Reason;
use common::*;

/// The game service and a blocklist for the flood's range, on pop-1's g1.
fn network() -> String {
    let services = sample::network(&[
        sample::udp_service("game", "27015"),
        sample::rule("blocklist", "deny").list("src", &[sample::ATTACKERS]),
    ]);
    pop_with(&["g1"], &services, &[])
}

/// rx drops of an interface as the kernel counts them (`ip -s`), in this namespace.
fn veth_drops(ifname: &str) -> u64 {
    let out = std::process::Command::new("ip")
        .args(["-s", "-j", "link", "show", ifname])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // Sum every "dropped" figure (rx and tx) of the interface.
    text.match_indices("\"dropped\":")
        .map(|(i, m)| {
            text[i + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect::<String>()
        })
        .filter_map(|n| n.parse::<u64>().ok())
        .sum()
}

#[test]
fn a_random_source_flood_is_counted_packet_for_packet() {
    require_root();
    in_thread(|| {
        NetSetup::enter_private()
            .lo_up()
            .veth("g0", "g1")
            .addr("198.51.100.1/24", "g1")
            .forwarding(&["all", "g1"])
            .apply()
            .unwrap();
        let net = config::parse(&network(), "gen.toml", std::path::Path::new(".")).unwrap();
        let pins =
            std::path::PathBuf::from(format!("/sys/fs/bpf/anypop-gen-{}", std::process::id()));
        struct Rm(std::path::PathBuf);
        impl Drop for Rm {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let _rm = Rm(pins.clone());
        let mut pop = Pop::start_with(&net, "pop-1", &pins).unwrap();
        let before = pop.snapshot().unwrap();
        let mut generator = TrafficGen::load().unwrap();
        generator
            .configure([198, 18, 0, 0].into(), 15, true)
            .unwrap();
        let g0 = anypop::sys::iface::ifindex("g0", "test").unwrap();
        let frame = udp4([198, 18, 0, 1], 1000, [203, 0, 113, 10], 27015, &[0x5a; 18]);
        let sent = 200_000u32;
        let took = generator.send(&frame, g0, sent).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let after = pop.snapshot().unwrap();
        let d = delta(&before, &after);
        let seen: u64 = d.iter().map(|(_, n)| n).sum();
        let dropped_rule =
            after.get(Reason::DropRule).packets - before.get(Reason::DropRule).packets;
        let lost = veth_drops("g0") + veth_drops("g1");
        eprintln!(
            "sent {sent} in {:.3} s ({:.2} Mpps); POP saw {seen} ({dropped_rule} drop_rule), veth dropped {lost}: {d:?}",
            took.as_secs_f64(),
            sent as f64 / took.as_secs_f64() / 1e6
        );
        // Background traffic of the namespace itself (IPv6 neighbour discovery and the like) may
        // add a few other verdicts; the flood is exactly the rule's drops.
        assert!(
            seen - dropped_rule < 10,
            "only the flood and a little background: {d:?}"
        );
        assert_eq!(
            dropped_rule + lost,
            sent as u64,
            "every generated frame is accounted for"
        );
        assert!(
            dropped_rule > sent as u64 / 2,
            "most of the flood reaches the POP"
        );
        pop.stop(false).unwrap();
    });
}
