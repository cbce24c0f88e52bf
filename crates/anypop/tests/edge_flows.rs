//! Backend choice through the real program: two POPs loaded from the same file choose the same
//! backend for every flow (a route flap moves no player), and a draining backend keeps its
//! existing flows while new ones go elsewhere, across live config switches.
mod common;

use anypop::dataplane::testrun::{XDP_REDIRECT, XDP_TX};
use common::*;

/// One service on port 27020 served by `backends` (be-2 next to the lab's b0) with optional
/// weights (a TOML inline table).
fn network(backends: &[&str], weights: Option<&str>) -> String {
    let pool = sample::service("pool", sample::VIP, "udp")
        .str("ports", "27020")
        .list("backends", backends);
    let pool = match weights {
        Some(w) => pool.val("weights", w),
        None => pool,
    };
    let be2 = sample::backend("be-2", "eth0", "192.0.2.22");
    pop_with(&["a0", "b0"], &pool.to_string(), &[be2])
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
    in_lab(|lab| {
        let net = network(&["be-1", "be-2"], None);
        let mut pop_a = TestEdge::new(&net, lab);
        let mut pop_b = TestEdge::new(&net, lab);
        let mut on_be1 = 0;
        for i in 0..2000 {
            let f = player(i);
            let a = backend_of(&mut pop_a, lab, &f);
            let b = backend_of(&mut pop_b, lab, &f);
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
    });
}

#[test]
fn draining_keeps_existing_flows_and_removal_moves_them() {
    in_lab(|lab| {
        let mut t = TestEdge::new(&network(&["be-1", "be-2"], None), lab);
        let before: Vec<[u8; 4]> = (0..400)
            .map(|i| backend_of(&mut t, lab, &player(i)))
            .collect();
        assert!(before.contains(&BE1) && before.contains(&BE2));

        // Drain be-1 (weight 0), live.
        t.apply(&network(&["be-1", "be-2"], Some("{ \"be-1\" = 0 }")));
        for i in 0..400u16 {
            assert_eq!(
                backend_of(&mut t, lab, &player(i)),
                before[i as usize],
                "existing flow {i} moved while draining"
            );
        }
        for i in 1000..1400u16 {
            assert_eq!(
                backend_of(&mut t, lab, &player(i)),
                BE2,
                "new flow {i} went to the draining backend"
            );
        }

        // Remove be-1 from the service: its flows move, the others stay.
        t.apply(&network(&["be-2"], None));
        for i in 0..400u16 {
            assert_eq!(backend_of(&mut t, lab, &player(i)), BE2, "flow {i}");
        }
    });
}

/// `network` with a blocklist rule of `prefixes`.
fn with_blocklist(prefixes: &[&str]) -> String {
    let list: Vec<String> = prefixes.iter().map(|p| format!("\"{p}\"")).collect();
    network(&["be-1", "be-2"], None)
        + &format!(
            "\n[[rule]]\nname = \"blocklist\"\naction = \"deny\"\nsrc = [{}]\n",
            list.join(", ")
        )
}

#[test]
fn a_small_change_rewrites_only_what_differs_and_behaves_like_a_full_apply() {
    in_lab(|lab| {
        let base = ["198.18.0.0/15", "10.20.0.0/16", "172.16.5.0/24"];
        let mut t = TestEdge::new(&with_blocklist(&base), lab);
        let flows: Vec<[u8; 4]> = (0..200)
            .map(|i| backend_of(&mut t, lab, &player(i)))
            .collect();
        // The other slot learns the same config (its first write is whole).
        let second = t.apply(&with_blocklist(&base));
        assert!(second.written.dir_rewritten && second.written.maglev_tables == 1);
        // One prefix more: only that trie entry and the DIR-24-8 table are rewritten, no Maglev.
        let mut more = base.to_vec();
        more.push("100.99.0.0/16");
        let added = t.apply(&with_blocklist(&more));
        assert_eq!(added.written.maglev_tables, 0, "{:?}", added.written);
        assert!(
            added.written.trie_writes <= 2,
            "one prefix added rewrote {} trie entries",
            added.written.trie_writes
        );
        let newly_blocked = udp4([100, 99, 1, 2], 4000, VIP, 27020, b"x");
        let r = t.run(&newly_blocked, lab.a0);
        assert_eq!(
            r.action,
            anypop::dataplane::testrun::XDP_DROP,
            "the added prefix is live"
        );
        // Back to the base list, in the other slot: the prefix is gone again, the rest stays.
        let removed = t.apply(&with_blocklist(&base));
        assert_eq!(removed.written.maglev_tables, 0);
        assert!(removed.written.trie_writes <= 2, "{:?}", removed.written);
        assert_ne!(
            t.run(&newly_blocked, lab.a0).action,
            anypop::dataplane::testrun::XDP_DROP,
            "the removed prefix no longer drops"
        );
        let still = udp4([172, 16, 5, 9], 4000, VIP, 27020, b"x");
        assert_eq!(
            t.run(&still, lab.a0).action,
            anypop::dataplane::testrun::XDP_DROP
        );
        // A backend change rebuilds that service's Maglev table, and flows keep their backends.
        let drained = t.apply(
            &(network(&["be-1", "be-2"], Some("{ \"be-2\" = 0 }"))
                + "\n[[rule]]\nname = \"blocklist\"\naction = \"deny\"\nsrc = [\"198.18.0.0/15\", \"10.20.0.0/16\", \"172.16.5.0/24\"]\n"),
        );
        assert_eq!(drained.written.maglev_tables, 1);
        for i in 0..200u16 {
            assert_eq!(
                backend_of(&mut t, lab, &player(i)),
                flows[i as usize],
                "flow {i}"
            );
        }
    });
}

/// Keeps this thread on one CPU, so every test run uses that CPU's part of the flow cache.
fn stay_on_one_cpu() {
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(0, &mut set) };
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    assert_eq!(
        rc,
        0,
        "sched_setaffinity: {}",
        std::io::Error::last_os_error()
    );
}

/// The flow table (`FLOWS`) of the edge under test, opened from its pin.
fn flow_table(
    t: &TestEdge,
) -> aya::maps::HashMap<
    aya::maps::MapData,
    anypop_common::layout::FlowKey,
    anypop_common::layout::FlowValue,
> {
    let data = aya::maps::MapData::from_pin(t.pin_dir.join("FLOWS")).unwrap();
    aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(data)).unwrap()
}

#[test]
fn a_busy_flow_keeps_its_backend_even_after_the_flow_table_evicted_it() {
    // The steady path reads each CPU's flow cache and leaves `FLOWS` alone, so a full `FLOWS`
    // may evict a busy flow. Such a flow must still keep its backend across a config change,
    // and be recorded in `FLOWS` again.
    in_lab(|lab| {
        stay_on_one_cpu();
        let mut t = TestEdge::new(&network(&["be-1", "be-2"], None), lab);
        let before: Vec<[u8; 4]> = (0..300)
            .map(|i| backend_of(&mut t, lab, &player(i)))
            .collect();
        assert!(before.contains(&BE1) && before.contains(&BE2));
        // Served from the cache now: the same answers.
        for i in 0..300u16 {
            assert_eq!(backend_of(&mut t, lab, &player(i)), before[i as usize]);
        }
        // `FLOWS` forgets every flow (as its LRU would under pressure).
        let mut flows = flow_table(&t);
        let keys: Vec<_> = flows.keys().map(|k| k.unwrap()).collect();
        assert_eq!(keys.len(), 300, "every flow was recorded when it began");
        for k in &keys {
            flows.remove(k).unwrap();
        }
        assert_eq!(flows.keys().count(), 0);

        // A config change that gives be-1's Maglev slots to be-2 (drain): existing flows stay.
        t.apply(&network(&["be-1", "be-2"], Some("{ \"be-1\" = 0 }")));
        for i in 0..300u16 {
            assert_eq!(
                backend_of(&mut t, lab, &player(i)),
                before[i as usize],
                "flow {i} moved although this CPU's cache knew its backend"
            );
        }
        assert_eq!(
            flow_table(&t).keys().count(),
            300,
            "the confirmed flows are recorded in FLOWS again"
        );
        // New flows go to the backend that is not draining.
        for i in 1000..1100u16 {
            assert_eq!(backend_of(&mut t, lab, &player(i)), BE2, "new flow {i}");
        }
    });
}
