//! The rate-limit buckets' accounting through the real program: every admitted packet is charged
//! its exact cost to its source's bucket, by one CPU and by several CPUs charging the same
//! bucket at once (where compare-and-swap races are lost and `charge()` must still charge).
mod common;

use std::{
    os::fd::{AsFd, AsRawFd},
    sync::Barrier,
};

use anypop::dataplane::testrun::{XDP_DROP, run_xdp_raw_fd};
use anypop_common::{
    layout::{Bucket, BucketKey},
    verdict::Reason,
};
use common::*;

/// One service whose only backend is drained: a packet the limit admits ends as
/// `drop_no_backend`, untouched, so BPF_PROG_TEST_RUN can repeat the same frame (a forwarded
/// frame would be rewritten between repeats). 1,000 pps (1 ms a packet) with a burst of an hour
/// (3.6 million packets): nothing here is denied, and once primed with 10,000 packets the bucket
/// runs 10 s ahead of the clock, so its TAT moves by exactly 1 ms per admitted packet.
fn network() -> String {
    lab_network(include_str!("fixtures/charge.toml"))
}

const COST_NS: u64 = 1_000_000;
/// Packets that put the bucket 10 s ahead of the clock.
const PRIME: u32 = 10_000;
const SOURCE: [u8; 4] = [100, 64, 9, 9];

/// The packet-rate TAT of `src`'s bucket.
fn tat_of(t: &TestEdge, src: [u8; 4]) -> u64 {
    let data = aya::maps::MapData::from_pin(t.pin_dir.join("BUCKETS")).unwrap();
    let m: aya::maps::HashMap<_, BucketKey, Bucket> =
        aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(data)).unwrap();
    let want = u32::from_ne_bytes(src);
    let found: Vec<Bucket> = m
        .iter()
        .map(|e| e.unwrap())
        .filter(|(k, _)| k.src[0] == want)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(found.len(), 1, "one bucket for the source");
    found[0].tat_packets
}

fn on_cpu(cpu: usize) {
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    assert_eq!(
        rc,
        0,
        "sched_setaffinity: {}",
        std::io::Error::last_os_error()
    );
}

fn packets(t: &mut TestEdge, r: Reason) -> u64 {
    t.snapshot().get(r).packets
}

/// Runs `f` with the edge loaded in a private lab, the source's bucket primed [`PRIME`] packets
/// ahead of the clock. `f` gets the program's fd and the primed TAT.
fn with_primed_bucket(f: impl FnOnce(&mut TestEdge, i32, u64) + Send + 'static) {
    in_lab(move |lab| {
        let mut t = TestEdge::new(&network(), lab);
        let frame = udp4(SOURCE, 40000, [203, 0, 113, 10], 27015, b"tick");
        let fd = t.edge().program().fd().unwrap().as_fd().as_raw_fd();
        let (action, _) = run_xdp_raw_fd(fd, &frame, None, PRIME).unwrap();
        assert_eq!(action, XDP_DROP);
        let primed = packets(&mut t, Reason::DropNoBackend);
        assert_eq!(primed, PRIME as u64, "admitted, no backend");
        let tat0 = tat_of(&t, SOURCE);
        f(&mut t, fd, tat0);
    });
}

#[test]
fn one_cpu_charges_every_admitted_packet() {
    with_primed_bucket(|t, fd, tat0| {
        on_cpu(0);
        let frame = udp4(SOURCE, 40000, [203, 0, 113, 10], 27015, b"tick");
        let n = 10_000;
        let (action, _) = run_xdp_raw_fd(fd, &frame, None, n).unwrap();
        assert_eq!(action, XDP_DROP);
        assert_eq!(packets(t, Reason::DropNoBackend), (PRIME + n) as u64);
        assert_eq!(packets(t, Reason::DropRateLimit), 0);
        assert_eq!(tat_of(t, SOURCE) - tat0, n as u64 * COST_NS);
    });
}

/// Two CPUs charge one bucket at once, so compare-and-swap races are lost, some twice in a row.
/// Every admitted packet must still be charged: the TAT moves by exactly the admitted packets'
/// cost. How many races are lost is up to the machine, so this can only fail when races happen:
/// on the two-CPU development machine, a `charge()` that admitted a twice-losing packet without
/// charging it fell short by about 35 packets per million every run, and one that charged it
/// with a plain store (overwriting a concurrent charge) fell short in some runs.
#[test]
fn cpus_racing_for_one_bucket_charge_every_admitted_packet() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        eprintln!("one CPU: no race to test");
        return;
    }
    with_primed_bucket(|t, fd, tat0| {
        let frame = udp4(SOURCE, 40000, [203, 0, 113, 10], 27015, b"tick");
        let n = 500_000u32;
        let start = Barrier::new(2);
        std::thread::scope(|s| {
            for cpu in 0..2 {
                let (frame, start) = (&frame, &start);
                s.spawn(move || {
                    on_cpu(cpu);
                    start.wait();
                    let (action, _) = run_xdp_raw_fd(fd, frame, None, n).unwrap();
                    assert_eq!(action, XDP_DROP);
                });
            }
        });
        let admitted = packets(t, Reason::DropNoBackend) - PRIME as u64;
        assert_eq!(admitted, 2 * n as u64, "nothing denied");
        assert_eq!(packets(t, Reason::DropRateLimit), 0);
        let charged = (tat_of(t, SOURCE) - tat0) / COST_NS;
        assert_eq!(
            charged, admitted,
            "admitted {admitted} packets but charged {charged}"
        );
    });
}
