//! Counters as the programs keep them: per CPU, packets and bytes per index. Every counter map
//! of every program (verdicts, rules, services, backends) is read through [`sum_per_cpu`].
use anypop_common::{layout::Counter, verdict::Reason};
use aya::maps::{MapData, MapError, PerCpuArray};

/// Sums a per-CPU counter array over CPUs, one entry per index.
pub fn sum_per_cpu<T: std::borrow::Borrow<MapData>>(
    map: &PerCpuArray<T, Counter>,
) -> Result<Vec<Counter>, MapError> {
    map.iter()
        .map(|v| {
            v.map(|per_cpu| {
                per_cpu.iter().fold(Counter::default(), |a, c| Counter {
                    packets: a.packets + c.packets,
                    bytes: a.bytes + c.bytes,
                })
            })
        })
        .collect()
}

/// Counters by reason at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub by_reason: Vec<Counter>,
}

impl Snapshot {
    pub fn get(&self, r: Reason) -> Counter {
        self.by_reason.get(r as usize).copied().unwrap_or_default()
    }
}
