//! Every map of the edge but the capture's (`capture.rs`). The names are the pins'
//! (`/sys/fs/bpf/anypop/v<LAYOUT_VERSION>/<node>/<NAME>`) and user space opens them by name:
//! never rename one.
use anypop_common::{layout::*, verdict::REASON_SLOTS};
use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};

use crate::flows::FlowCacheBucket;

// ---- config maps (generation slot in key or index) ----
#[map]
pub static CONTROL: Array<Control> = Array::pinned(1, 0);
#[map]
pub static SETTINGS: Array<Settings> = Array::pinned(GENERATIONS, 0);
#[map]
pub static VIPS: HashMap<VipKey, u32> = HashMap::pinned(1024, 0);
#[map]
pub static SERVICES: HashMap<ServiceKey, u32> = HashMap::pinned(131_072, 0);
#[map]
pub static SVC4_TABLE: Array<[u64; SVC4_WAYS]> = Array::pinned(
    GENERATIONS * SVC4_BUCKETS,
    aya_ebpf::bindings::BPF_F_MMAPABLE,
);
#[map]
pub static SVC_INFO: Array<ServiceInfo> = Array::pinned(GENERATIONS * MAX_SERVICES, 0);
#[map]
pub static RULES: Array<RuleEntry> =
    Array::pinned(GENERATIONS * MAX_SERVICES * RULES_PER_SERVICE, 0);
#[map]
pub static SET_TBL: Array<u64> = Array::pinned(GENERATIONS * MAX_SERVICES * SET_CHUNKS * 256, 0);
#[map]
pub static SRC_V4: LpmTrie<LpmData4, u64> = LpmTrie::pinned(262_144, 0);
#[map]
pub static SRC4_DIR: Array<u64> =
    Array::pinned(GENERATIONS * DIR_WORDS, aya_ebpf::bindings::BPF_F_MMAPABLE);
#[map]
pub static SRC4_CLASS: Array<u64> = Array::pinned(GENERATIONS * CLASSES, 0);
#[map]
pub static SRC4_DECIDE: Array<u32> = Array::pinned(
    GENERATIONS * MAX_SERVICES * CLASSES,
    aya_ebpf::bindings::BPF_F_MMAPABLE,
);
#[map]
pub static SRC_V6: LpmTrie<LpmData6, u64> = LpmTrie::pinned(262_144, 0);
#[map]
pub static PROFILES: Array<Profile> = Array::pinned(GENERATIONS * MAX_PROFILES, 0);
#[map]
pub static BACKENDS: Array<Backend> = Array::pinned(GENERATIONS * MAX_BACKENDS, 0);
#[map]
pub static BE_SVC: HashMap<BackendServiceKey, u32> = HashMap::pinned(16_384, 0);
#[map]
pub static MAGLEV: Array<u32> = Array::pinned(
    GENERATIONS * MAX_SERVICES * MAGLEV_SIZE,
    aya_ebpf::bindings::BPF_F_MMAPABLE,
);
#[map]
pub static IFACES: HashMap<u32, IfaceInfo> = HashMap::pinned(64, 0);
#[map]
pub static FIB_CACHE: PerCpuArray<FibCacheEntry> = PerCpuArray::pinned(MAX_BACKENDS, 0);
#[map]
pub static TX_PORTS: DevMapHash = DevMapHash::pinned(64, 0);

// ---- state maps (stable keys; survive config generations and program upgrades) ----
#[map]
pub static FLOWS: LruHashMap<FlowKey, FlowValue> = LruHashMap::pinned(1_000_000, 0);
#[map]
pub static BUCKETS: LruHashMap<BucketKey, Bucket> = LruHashMap::pinned(1_000_000, 0);
#[map]
pub static NEWSRC: Array<SourceWindow> = Array::pinned(1, 0);
/// Each CPU's copy of its recent IPv4 flows, in front of `FLOWS` (see [`FlowCacheBucket`]):
/// `FLOW_CACHE_BUCKETS` buckets per CPU, CPU by CPU (user space sizes it for the machine's
/// CPUs). A plain array indexed by CPU rather than a per-CPU array: its lookup is one address
/// computation, where a per-CPU array's goes through a table of per-element pointers (a second
/// cache miss). Not pinned: a new program starts with an empty cache and refills it from
/// `FLOWS`.
#[map]
pub static FLOW_CACHE: Array<FlowCacheBucket> = Array::with_max_entries(FLOW_CACHE_BUCKETS, 0);

// ---- counters ----
#[map]
pub static COUNTERS: PerCpuArray<Counter> = PerCpuArray::pinned(REASON_SLOTS, 0);
#[map]
pub static RULE_HITS: PerCpuArray<Counter> = PerCpuArray::pinned(GENERATIONS * MAX_RULES_TOTAL, 0);
#[map]
pub static SVC_HITS: PerCpuArray<Counter> = PerCpuArray::pinned(GENERATIONS * MAX_SERVICES, 0);
#[map]
pub static BE_HITS: PerCpuArray<Counter> = PerCpuArray::pinned(GENERATIONS * MAX_BACKENDS, 0);
