//! Packet capture: the sampling request the edge program reads, its per-CPU budget, and the
//! record the ring buffer carries.

/// Bytes of each captured packet kept (the headers that explain a verdict, and some payload).
pub const CAPTURE_SNAPLEN: u32 = 256;
/// Bytes of the capture ring buffer (a power of two; ~3,000 samples in flight).
pub const CAPTURE_RING_BYTES: u32 = 1 << 20;

/// What `anypop capture` asks the edge program to sample. All zero (the default) is "off": the
/// program then pays one array read and one test per packet.
///
/// Layout compatibility: this was `{ reasons: u64, service, per_cpu_pps }`. On little-endian
/// (the only BPF target anypop builds) `reasons` is the old field's low half and `expires` its
/// high half, so the value keeps its 16 bytes and a pinned map is shared across versions: an
/// older program reads `expires` as reason bits 32..63, which no reason has (every reason is
/// below 32, asserted at compile time where the bitmap is built); an older `anypop capture`
/// leaves `expires` 0, "no deadline".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureConfig {
    /// Bit `r` set: sample packets whose verdict reason is `r`.
    pub reasons: u32,
    /// Second of CLOCK_MONOTONIC (`bpf_ktime_get_ns() / 1e9`) from which the program stops
    /// sampling; 0: no deadline. A running capture keeps pushing it a few seconds ahead, so one
    /// that dies without clearing its request (`kill -9`) stops sampling by itself.
    pub expires: u32,
    /// Only this service index (live generation), or [`NONE`](super::NONE) for any.
    pub service: u32,
    /// Samples per second per CPU at most: a flood cannot flood the ring or the reader.
    pub per_cpu_pps: u32,
}

/// Per-CPU sampling budget of the current one-second window.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureWindow {
    pub start_ns: u64,
    pub taken: u32,
    pub _pad: u32,
}

/// One sampled packet, as the ring buffer carries it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptureRecord {
    /// XDP action returned.
    pub action: u32,
    /// Verdict reason (`Reason as u32`).
    pub reason: u32,
    /// Service index in the live generation, or [`NONE`](super::NONE).
    pub service: u32,
    /// Rule index (names in the network file's order), or [`NONE`](super::NONE).
    pub rule: u32,
    /// Live generation slot when sampled.
    pub generation: u32,
    /// Length of the frame on the wire (as the program left it).
    pub len: u32,
    /// Bytes in `data`.
    pub caplen: u32,
    pub _pad: u32,
    pub data: [u8; CAPTURE_SNAPLEN as usize],
}
