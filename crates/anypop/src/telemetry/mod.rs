//! Counters: per-verdict totals, deltas between two readings and the one-line summary the daemon
//! logs every few seconds; `status` reads a node's pinned maps.
pub mod capture;
pub mod metrics;
pub mod status;
pub mod trace;

use anypop_common::{layout::Counter, verdict::Reason};

/// Sums a per-CPU counter array over CPUs, one entry per index. Every counter map of every
/// program (verdicts, rules, services, backends) is read through this.
pub fn sum_per_cpu<T: std::borrow::Borrow<aya::maps::MapData>>(
    map: &aya::maps::PerCpuArray<T, Counter>,
) -> Result<Vec<Counter>, aya::maps::MapError> {
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

/// Packets and bytes per reason between two snapshots, as rates per second.
pub fn rates(prev: &Snapshot, now: &Snapshot, secs: f64) -> Vec<(Reason, f64, f64)> {
    Reason::ALL
        .iter()
        .map(|&r| {
            let a = prev.get(r);
            let b = now.get(r);
            let dp = b.packets.saturating_sub(a.packets) as f64 / secs.max(1e-9);
            let db = b.bytes.saturating_sub(a.bytes) as f64 / secs.max(1e-9);
            (r, dp, db)
        })
        .collect()
}

/// Human-friendly number: 950, 12.3k, 4.56M.
pub fn si(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// One line: forwarded, passed and dropped rates, then every reason that moved, busiest first.
pub fn summary_line(prev: &Snapshot, now: &Snapshot, secs: f64) -> String {
    let mut r = rates(prev, now, secs);
    let fwd: f64 = r
        .iter()
        .filter(|(x, ..)| matches!(x, Reason::FwdIpip | Reason::FwdIpipKernel))
        .map(|x| x.1)
        .sum();
    let drop: f64 = r.iter().filter(|(x, ..)| x.is_drop()).map(|x| x.1).sum();
    let pass: f64 = r
        .iter()
        .filter(|(x, ..)| !x.is_drop() && !matches!(x, Reason::FwdIpip | Reason::FwdIpipKernel))
        .map(|x| x.1)
        .sum();
    r.retain(|x| x.1 > 0.0);
    r.sort_by(|a, b| b.1.total_cmp(&a.1));
    let detail: Vec<String> = r
        .iter()
        .map(|(x, p, _)| format!("{}={}/s", x.name(), si(*p)))
        .collect();
    format!(
        "fwd {}/s drop {}/s pass {}/s | {}",
        si(fwd),
        si(drop),
        si(pass),
        if detail.is_empty() {
            "idle".to_string()
        } else {
            detail.join(" ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(v: &[(Reason, u64)]) -> Snapshot {
        let mut s = Snapshot {
            by_reason: vec![Counter::default(); 32],
        };
        for (r, p) in v {
            s.by_reason[*r as usize] = Counter {
                packets: *p,
                bytes: *p * 100,
            };
        }
        s
    }

    #[test]
    fn summary_shows_rates_busiest_first() {
        let a = snap(&[(Reason::FwdIpip, 100), (Reason::DropRule, 1000)]);
        let b = snap(&[
            (Reason::FwdIpip, 300),
            (Reason::DropRule, 21_000),
            (Reason::PassNotVip, 4),
        ]);
        let line = summary_line(&a, &b, 2.0);
        assert_eq!(
            line,
            "fwd 100/s drop 10.0k/s pass 2/s | drop_rule=10.0k/s fwd_ipip=100/s pass_not_vip=2/s"
        );
    }

    #[test]
    fn idle_when_nothing_moved() {
        let a = snap(&[(Reason::FwdIpip, 5)]);
        assert!(summary_line(&a, &a, 5.0).ends_with("| idle"));
    }
}
