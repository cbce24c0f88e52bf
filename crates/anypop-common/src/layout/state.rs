//! State maps: flows, rate-limit buckets, the new-source window, counters, interface facts and
//! the FIB cache. Keyed by stable ids, never by generation slot, so they survive config changes.

/// Buckets per CPU of the edge's flow cache (`FLOW_CACHE`, in front of `FLOWS`; a power of
/// two): 32,768 buckets of two 32-byte entries = 2 MiB per CPU, room for about 40,000 busy
/// flows per CPU before collisions send a noticeable share of packets to `FLOWS`. The map is
/// not pinned, so this may change without a layout version.
pub const FLOW_CACHE_BUCKETS: u32 = 32_768;

/// Key of the `FLOWS` LRU: one player's flow to one service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub service_id: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
    /// As in [`VipKey::addr`](super::VipKey::addr).
    pub src: [u32; 4],
}

/// Value of `FLOWS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    /// Backend address, network byte order: what survives config changes.
    pub backend: u32,
    /// Backend index in the config generation that last confirmed this flow.
    pub backend_index: u32,
    /// [`Control::version`](super::Control::version) of that confirmation: while it is still the live version, the flow
    /// needs no re-check (saves a hash lookup per packet).
    pub config_version: u32,
    pub _pad: u32,
    /// Reserved, written as 0: the edge no longer stamps new flows with `bpf_ktime_get_ns`
    /// (nothing read it, and the helper call cost time on every new flow).
    pub created_ns: u64,
}

/// Key of the `BUCKETS` LRU: one source under one profile of one service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BucketKey {
    pub service_id: u32,
    pub profile_id: u32,
    pub family: u8,
    pub _pad: [u8; 3],
    /// As in [`VipKey::addr`](super::VipKey::addr).
    pub src: [u32; 4],
}

/// Value of `BUCKETS`: GCRA timestamps updated with compare-and-swap by any CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    pub tat_packets: u64,
    pub tat_bytes: u64,
    pub blocked_until_ns: u64,
}

/// `NEWSRC[0]`: the one-second window of the new-source cap, shared by all CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceWindow {
    pub window_start_ns: u64,
    pub count: u64,
}

/// Packets and bytes, the value of every per-CPU counter array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// `IFACES[ifindex]`: facts about our own interfaces the XDP program cannot learn itself.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceInfo {
    pub mac: [u8; 6],
    /// Interface MTU: the limit for encapsulated packets sent with a cached next hop.
    pub mtu: u16,
}

/// How long (in jiffies: 0.25 s at HZ=1000, 2.5 s at HZ=100) a cached FIB answer is used before
/// `bpf_fib_lookup` is asked again. Reading jiffies costs one load; the FIB lookup is the most
/// expensive step of the forward path.
pub const FIB_CACHE_JIFFIES: u64 = 250;

/// `FIB_CACHE[backend index]` (per CPU): the last FIB answer for a backend.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FibCacheEntry {
    /// The backend this answer is for (indices move between config generations).
    pub backend: u32,
    pub ingress: u32,
    pub egress: u32,
    pub mtu: u32,
    pub expires_jiffies: u64,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    pub _pad: [u8; 4],
}
