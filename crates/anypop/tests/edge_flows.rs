//! Backend choice through the real program: two POPs loaded from the same file choose the same
//! backend for every flow (a route flap moves no player), and a draining backend keeps its
//! existing flows while new ones go elsewhere, across live config switches.
mod common;

use anypop::dataplane::testrun::{XDP_REDIRECT, XDP_TX};
use common::*;

const VIP: [u8; 4] = [203, 0, 113, 10];
const BE1: [u8; 4] = [198, 51, 100, 21];
const BE2: [u8; 4] = [192, 0, 2, 22];

/// One service on port 27020 served by `backends` with optional weights.
fn network(backends: &str, weights: &str) -> String {
    format!(
        r#"
[defaults]
new_source_cap = 0

[[service]]
name = "pool"
vip = "203.0.113.10"
protocol = "udp"
ports = "27020"
backends = [{backends}]
{weights}

[[node]]
name = "pop-1"
role = "pop"
interfaces = ["a0", "b0"]
tunnel_source = "198.51.100.1"

[[node]]
name = "be-1"
role = "backend"
interface = "eth0"
address = "198.51.100.21"

[[node]]
name = "be-2"
role = "backend"
interface = "eth0"
address = "192.0.2.22"
"#
    )
}

fn player(i: u16) -> Vec<u8> {
    udp4(
        [100, 70, (i >> 8) as u8, i as u8],
        30000 + i,
        VIP,
        27020,
        b"tick",
    )
}

fn backend_of(t: &mut TestEdge, lab: &Lab, frame: &[u8]) -> [u8; 4] {
    let r = t.run(frame, lab.a0);
    assert!(
        r.action == XDP_TX || r.action == XDP_REDIRECT,
        "not forwarded: {}",
        r.action
    );
    outer_dst(&r.output)
}

#[test]
fn two_pops_with_the_same_file_choose_the_same_backends() {
    std::thread::spawn(|| {
        let lab = build_lab();
        let net = network("\"be-1\", \"be-2\"", "");
        let mut pop_a = TestEdge::new(&net, &lab);
        let mut pop_b = TestEdge::new(&net, &lab);
        let mut on_be1 = 0;
        for i in 0..2000 {
            let f = player(i);
            let a = backend_of(&mut pop_a, &lab, &f);
            let b = backend_of(&mut pop_b, &lab, &f);
            assert_eq!(
                a, b,
                "flow {i} lands on different backends from the two POPs"
            );
            on_be1 += (a == BE1) as u32;
        }
        // And the pool is balanced: Maglev gives each of two equal backends about half.
        assert!(
            (900..1100).contains(&on_be1),
            "be-1 got {on_be1} of 2000 flows"
        );
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

#[test]
fn draining_keeps_existing_flows_and_removal_moves_them() {
    std::thread::spawn(|| {
        let lab = build_lab();
        let mut t = TestEdge::new(&network("\"be-1\", \"be-2\"", ""), &lab);
        let before: Vec<[u8; 4]> = (0..400)
            .map(|i| backend_of(&mut t, &lab, &player(i)))
            .collect();
        assert!(before.contains(&BE1) && before.contains(&BE2));

        // Drain be-1 (weight 0), live.
        t.apply(&network("\"be-1\", \"be-2\"", "weights = { \"be-1\" = 0 }"));
        for i in 0..400u16 {
            assert_eq!(
                backend_of(&mut t, &lab, &player(i)),
                before[i as usize],
                "existing flow {i} moved while draining"
            );
        }
        for i in 1000..1400u16 {
            assert_eq!(
                backend_of(&mut t, &lab, &player(i)),
                BE2,
                "new flow {i} went to the draining backend"
            );
        }

        // Remove be-1 from the service: its flows move, the others stay.
        t.apply(&network("\"be-2\"", ""));
        for i in 0..400u16 {
            assert_eq!(backend_of(&mut t, &lab, &player(i)), BE2, "flow {i}");
        }
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e));
}
