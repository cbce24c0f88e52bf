//! The throughput harness at small scale: every DUT runs, and every frame the generator sent is
//! accounted for — taken by the DUT (and counted by the DUT itself with the verdict it should
//! give) or dropped by the full veth ring. Nothing here asserts a rate.
use anypop::bench::throughput::{Dut, Options, run};

#[test]
fn every_frame_is_accounted_for_on_every_dut() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "run the kernel tests as root"
    );
    let report = run(Options {
        frames: 100_000,
        rounds: 1,
        forward_only: false,
        one_cpu: false,
    })
    .unwrap();
    assert_eq!(
        report.samples.len(),
        13,
        "every (DUT, traffic) pair measured once"
    );
    for s in &report.samples {
        let what = format!("{} / {}: {s:?}", s.dut.label(), s.traffic.label());
        assert_eq!(s.accepted + s.ring_drops, s.sent, "generator side: {what}");
        assert_eq!(
            s.seen, s.accepted,
            "the DUT took every frame in the ring: {what}"
        );
        // veth counts only the XDP_TX frames that fit into g0's ring; the edge counts its
        // verdict whatever happens to the frame next.
        let tx_lost = if s.dut == Dut::BareTx { s.tx_errors } else { 0 };
        assert_eq!(s.counted + tx_lost, s.seen, "the DUT's own counter: {what}");
        if s.traffic.forward() {
            assert_eq!(
                s.returned + s.tx_errors,
                s.seen,
                "forwarded back to g0: {what}"
            );
        }
        assert!(s.seen > 0, "{what}");
    }
}
