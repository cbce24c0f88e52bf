//! What a run measured, summed up: medians per (DUT, traffic), the Markdown tables, and the
//! per-round ratios against issue 4's targets.
use std::fmt::Write as _;

use super::{Dut, Ratio, Report, Sample, Traffic};

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

impl Report {
    fn of(&self, dut: Dut, traffic: Traffic) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.dut == dut && s.traffic == traffic)
            .collect()
    }

    /// Median of a figure over the rounds.
    pub fn median(&self, dut: Dut, traffic: Traffic, f: impl Fn(&Sample) -> f64) -> f64 {
        median(self.of(dut, traffic).into_iter().map(f).collect())
    }

    /// A Markdown table: one row per (DUT, traffic), medians over the rounds and the best round.
    pub fn table(&self) -> String {
        let mut s = String::new();
        s.push_str("| DUT on g1 | traffic | offered Mpps | DUT Mpps (median) | DUT Mpps (best) | Mpps per DUT core-second (median) | veth ring drops | DUT counted / took |\n|---|---|---:|---:|---:|---:|---:|---|\n");
        let mut seen: Vec<(Dut, Traffic)> = Vec::new();
        for x in &self.samples {
            if seen.contains(&(x.dut, x.traffic)) {
                continue;
            }
            seen.push((x.dut, x.traffic));
            let v = self.of(x.dut, x.traffic);
            let sent: u64 = v.iter().map(|s| s.sent).sum();
            let drops: u64 = v.iter().map(|s| s.ring_drops).sum();
            let took: u64 = v.iter().map(|s| s.seen).sum();
            let counted: u64 = v.iter().map(|s| s.counted).sum();
            let mpps: Vec<f64> = v.iter().map(|s| s.mpps()).collect();
            let mut extra = String::new();
            if x.traffic.forward() {
                let returned: u64 = v.iter().map(|s| s.returned).sum();
                let tx_err: u64 = v.iter().map(|s| s.tx_errors).sum();
                let _ = write!(extra, "; back on g0 {returned}, g0 ring full {tx_err}");
            }
            let _ = writeln!(
                s,
                "| {} | {} | {:.2} | **{:.2}** | {:.2} | {:.2} | {:.1} % | {counted} / {took}{extra} |",
                x.dut.label(),
                x.traffic.label(),
                self.median(x.dut, x.traffic, Sample::offered_mpps),
                median(mpps.clone()),
                best(&mpps),
                self.median(x.dut, x.traffic, Sample::per_core_mpps),
                100.0 * drops as f64 / sent.max(1) as f64,
            );
        }
        s
    }

    /// issue 4's targets, each compared round by round: the DUT and its baseline measured in the
    /// same round (seconds apart) make one ratio, and the median of those ratios is the figure.
    /// Pairing by round keeps a slow change of the shared machine's speed (other VMs on the
    /// host) out of the ratio, which a ratio of medians taken across rounds would not.
    pub fn ratios(&self) -> Vec<Ratio> {
        let mut out = Vec::new();
        // The edge's flood drop against every drop baseline, with each flood the baseline ran.
        let mut pairs = Vec::new();
        for (baseline, name, target) in [
            (Dut::BareDrop, "bare XDP_DROP", 0.9),
            (Dut::BareDropRead, "bare XDP_DROP reading the frame", 0.9),
            (Dut::XdpFilter, "xdp-filter", 1.0),
            (Dut::Nftables, "nftables", 5.0),
            (Dut::NftRaw, "nftables ip prerouting raw", 5.0),
        ] {
            for &t in baseline.traffic() {
                let sources = if t == Traffic::FloodFixed {
                    "1 source"
                } else {
                    "random sources"
                };
                pairs.push((
                    format!("flood drop vs {name} ({sources})"),
                    (Dut::Edge, t),
                    (baseline, t),
                    target,
                ));
            }
        }
        pairs.push((
            "forward vs bare XDP_TX".to_owned(),
            (Dut::Edge, Traffic::Players),
            (Dut::BareTx, Traffic::Players),
            0.6,
        ));
        for (what, a, b, target) in pairs {
            let mut wall = Vec::new();
            let mut core = Vec::new();
            for x in self.of(a.0, a.1) {
                let Some(y) = self.of(b.0, b.1).into_iter().find(|y| y.round == x.round) else {
                    continue;
                };
                if y.mpps() > 0.0 && y.per_core_mpps() > 0.0 {
                    wall.push(x.mpps() / y.mpps());
                    core.push(x.per_core_mpps() / y.per_core_mpps());
                }
            }
            if core.is_empty() {
                continue;
            }
            let lowest = core.iter().copied().fold(f64::INFINITY, f64::min);
            out.push(Ratio {
                what,
                wall: median(wall),
                core_lowest: lowest,
                core_highest: best(&core),
                core: median(core),
                target,
            });
        }
        out
    }

    /// The targets table, in Markdown.
    pub fn ratio_table(&self) -> String {
        let mut s = String::from(
            "| target (issue 4) | ratio, DUT Mpps | ratio, per DUT core-second | per core-second, rounds' range | met? |\n|---|---:|---:|---:|---|\n",
        );
        for Ratio {
            what,
            wall,
            core,
            core_lowest,
            core_highest,
            target,
        } in self.ratios()
        {
            // Both ratios are upper bounds when the baseline was not saturated (its wall figure
            // is then the generator's rate, its per-core figure carries a wake-up per batch), so
            // one ratio under the target is enough to say no.
            let met = match (wall >= target, core >= target) {
                (true, true) => "yes",
                (false, false) => "**no**",
                _ => "**no** (one measure only, an upper bound)",
            };
            let _ = writeln!(
                s,
                "| {what} ≥ {target}× | {wall:.2}× | {core:.2}× | {core_lowest:.2}–{core_highest:.2}× | {met} |"
            );
        }
        s
    }

    /// Where the threads ran.
    pub fn placement(&self) -> String {
        match self.cpus {
            Some((g, d)) if g == d => format!(
                "generator, g0's NAPI (sink) and g1's NAPI thread (the DUT, highest real-time priority: it takes each batch as it is flushed) all on CPU {g}; per-core figures count the DUT thread's own CPU time"
            ),
            Some((g, d)) => format!(
                "generator and g0's NAPI (sink) pinned to CPU {g}; g1's NAPI thread (the DUT) pinned to CPU {d}"
            ),
            None => "one CPU: generator and DUT share it (figures are their combined cost)".into(),
        }
    }
}
