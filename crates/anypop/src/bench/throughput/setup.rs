//! Set-up of the veth pair: the DUT's network file and frames, the generator side (`g0` and the
//! sink for forwarded frames) and the DUT side (`g1`, its address, the backend's neighbour entry),
//! each with its NAPI in a thread of its own, and the placement of those threads on CPUs.
use super::sched::{Spinner, enter, pin, policy, threaded_napi};
use crate::{
    config::sample,
    dataplane::baseline::Baseline,
    sys::testns::{NetSetup, mac_text},
};

/// The DUT's network: a deny rule for the attacker's range, a forwarded service without limits.
pub(super) fn network() -> String {
    sample::network(&[
        sample::no_source_cap(),
        sample::udp_service("game", "27015"),
        sample::rule("attackers", "deny").list("src", &[sample::ATTACKERS]),
        sample::pop("pop-1", &["g1"], "10.1.0.1"),
        sample::backend("be-1", "eth0", BACKEND),
    ])
}

/// The backend: in `g1`'s subnet, its MAC that of `g0`, so forwarded frames go back to `g0`.
///
/// Why an address ending in `.8.0`: live-frames test runs recycle their pages without copying
/// the frame in again (only the data pointers are reset), and `edge` writes its new Ethernet and
/// outer IPv4 header 20 bytes before the original frame, so the original Ethernet header is
/// overwritten by the last 14 bytes of the outer header. Those end with the outer destination:
/// with `x.x.8.0` the recycled frame's EtherType reads 0x0800 and it is again a valid player
/// frame (inner IP header and payload untouched; the generator rewrites the source). With any
/// other backend address every frame after the first pass would be `pass_not_ip`.
const BACKEND: &str = "10.1.8.0";
pub(super) const FLOOD_SOURCE: [u8; 4] = [198, 18, 7, 7];
const VIP: [u8; 4] = [203, 0, 113, 10];
const PORT: u16 = 27015;

/// A 64-byte UDP frame (the classic minimum; 22 bytes of payload).
pub(super) fn frame(src_mac: [u8; 6], dst_mac: [u8; 6], src: [u8; 4]) -> Vec<u8> {
    crate::lab::frames::udp4_frame(src_mac, dst_mac, src, 40000, VIP, PORT, 64, &[0x5a; 22])
}

/// `g0`, the generator's side: its index and MAC, and the sink for forwarded frames, which also
/// keeps g0's NAPI (its own thread, `sink_thread`) running.
pub(super) struct GeneratorSide {
    pub(super) g0: u32,
    pub(super) mac: [u8; 6],
    pub(super) sink: Baseline,
    pub(super) sink_thread: i32,
}

/// Sets up `g0` in the generator's namespace (the calling thread enters it).
pub(super) fn generator_side(gen_ns: &str) -> anyhow::Result<GeneratorSide> {
    enter(gen_ns)?;
    let g0 = crate::sys::iface::ifindex("g0", "generator")?;
    let g0_mac = crate::sys::iface::mac_of("g0")?;
    NetSetup::new().gro("g0").apply()?;
    // The sink for forwarded frames; it also keeps g0's NAPI running.
    let mut sink = Baseline::load()?;
    sink.attach("base_drop", "g0")?;
    let sink_thread = threaded_napi(gen_ns, "g0")?;
    Ok(GeneratorSide {
        g0,
        mac: g0_mac,
        sink,
        sink_thread,
    })
}

/// Sets up `g1` in the DUT's namespace: the POP's address, forwarding, GRO, the backend's MAC
/// (`g0_mac`, so forwarded frames come back) and a NAPI thread. Returns g1's MAC and that thread.
pub(super) fn dut_side(dut_ns: &str, g0_mac: [u8; 6]) -> anyhow::Result<([u8; 6], i32)> {
    enter(dut_ns)?;
    let g1_mac = crate::sys::iface::mac_of("g1")?;
    NetSetup::new()
        .addr("10.1.0.1/16", "g1")
        .forwarding(&["all", "g1"])
        .gro("g1")
        .neigh(BACKEND, &mac_text(g0_mac), "g1")
        .apply()?;
    let dut_thread = threaded_napi(dut_ns, "g1")?;
    Ok((g1_mac, dut_thread))
}

/// The generator's CPU (also the sink's) and the DUT's.
pub(super) type Cpus = (usize, usize);

/// Places the calling thread (the generator), the sink's and the DUT's NAPI threads on CPUs, at
/// real-time priorities, and starts the DUT CPU's [`Spinner`]. Returns (generator CPU, DUT CPU),
/// None on one CPU, where nothing is pinned.
pub(super) fn place(
    one_cpu: bool,
    sink_thread: i32,
    dut_thread: i32,
) -> anyhow::Result<(Option<Cpus>, Option<Spinner>)> {
    let ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let cpus = (ncpu >= 2).then_some((0, ncpu - 1));
    // The sink shares the generator's CPU but preempts it (SCHED_FIFO 2 over the generator's
    // 1): forwarded frames are taken from g0's ring as they arrive, and the time that takes comes
    // out of the offered rate, not out of the DUT's core.
    let cpus = match (cpus, one_cpu) {
        (Some((gen_cpu, _)), true) => Some((gen_cpu, gen_cpu)),
        (c, _) => c,
    };
    let spinner = match cpus {
        Some((gen_cpu, dut_cpu)) => {
            pin(0, gen_cpu)?;
            pin(sink_thread, gen_cpu)?;
            policy(sink_thread, libc::SCHED_FIFO, 2)?;
            pin(dut_thread, dut_cpu)?;
            // On its own CPU the DUT needs only to stay ahead of other work; on the generator's,
            // it must also preempt the generator (1) and the sink (2) as each batch arrives.
            policy(dut_thread, libc::SCHED_FIFO, if one_cpu { 3 } else { 1 })?;
            Some(Spinner::start(dut_cpu))
        }
        None => None,
    };
    Ok((cpus, spinner))
}
