//! `anypop status`: what a node's data plane is doing, read from its pinned maps — also while no
//! daemon runs (`--leave-running`).
use std::{
    fmt::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow};
use anypop_common::{
    layout::{Bucket, BucketKey, Control, Counter, FlowKey, FlowValue},
    verdict::Reason,
};
use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};

use super::{Snapshot, si};

fn open(pin_dir: &Path, name: &str) -> anyhow::Result<MapData> {
    let path = pin_dir.join(name);
    MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))
}

fn counters(pin_dir: &Path, name: &str) -> anyhow::Result<Snapshot> {
    let m: PerCpuArray<MapData, Counter> =
        PerCpuArray::try_from(Map::PerCpuArray(open(pin_dir, name)?))
            .map_err(|e| anyhow!("{name}: {e}"))?;
    let by_reason = super::sum_per_cpu(&m).map_err(|e| anyhow!("{name}: {e}"))?;
    Ok(Snapshot { by_reason })
}

/// The verdict counters of the node whose pins are in `pin_dir` (POP or backend), read while its
/// daemon runs in another process (the lab reads its nodes this way).
pub fn pinned_verdicts(pin_dir: &Path) -> anyhow::Result<Snapshot> {
    if pin_dir.join("COUNTERS").exists() {
        counters(pin_dir, "COUNTERS")
    } else {
        counters(pin_dir, "B_COUNTERS")
    }
}

/// The status report of the node whose pins are in `pin_dir`; rates over `window`.
pub fn report(pin_dir: &Path, node: &str, window: Duration) -> anyhow::Result<String> {
    let edge = pin_dir.join("COUNTERS").exists();
    let backend = pin_dir.join("B_COUNTERS").exists();
    if !edge && !backend {
        anyhow::bail!(
            "no data plane pinned for node {node} in {} (is it running? start it with anypop run)",
            pin_dir.display()
        );
    }
    let name = if edge { "COUNTERS" } else { "B_COUNTERS" };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {node} ({} data plane, pins {})",
        if edge { "POP" } else { "backend" },
        pin_dir.display()
    );
    let lock = crate::daemon::run_dir(pin_dir).join("daemon.pid");
    let pid = std::fs::read_to_string(&lock)
        .ok()
        .filter(|p| Path::new(&format!("/proc/{}", p.trim())).exists());
    let links: Vec<String> = std::fs::read_dir(pin_dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_prefix("link_").map(String::from))
                })
                .collect()
        })
        .unwrap_or_default();
    let _ = match (&pid, links.is_empty()) {
        (Some(p), _) => writeln!(out, "daemon: running (pid {})", p.trim()),
        (None, false) => writeln!(
            out,
            "daemon: not running; data plane left running on {}",
            links.join(", ")
        ),
        (None, true) => writeln!(out, "daemon: not running"),
    };
    if edge {
        let c: Array<MapData, Control> = Array::try_from(Map::Array(open(pin_dir, "CONTROL")?))
            .map_err(|e| anyhow!("CONTROL: {e}"))?;
        let c = c.get(&0, 0).map_err(|e| anyhow!("CONTROL: {e}"))?;
        let _ = writeln!(
            out,
            "config: switch #{}, live slot {}",
            c.version, c.active_gen
        );
    }
    let a = counters(pin_dir, name)?;
    let t0 = Instant::now();
    std::thread::sleep(window);
    let b = counters(pin_dir, name)?;
    let secs = t0.elapsed().as_secs_f64();
    let _ = writeln!(out, "verdicts (total packets, rate over {secs:.1} s):");
    let mut any = false;
    for r in Reason::ALL {
        let (x, y) = (a.get(r), b.get(r));
        if y.packets == 0 {
            continue;
        }
        any = true;
        let rate = (y.packets - x.packets) as f64 / secs;
        let _ = writeln!(
            out,
            "  {:<20} {:>14} {:>10}/s",
            r.name(),
            y.packets,
            si(rate)
        );
    }
    if !any {
        let _ = writeln!(out, "  (no packets yet)");
    }
    if edge {
        let flows: HashMap<MapData, FlowKey, FlowValue> =
            HashMap::try_from(Map::LruHashMap(open(pin_dir, "FLOWS")?))
                .map_err(|e| anyhow!("FLOWS: {e}"))?;
        let buckets: HashMap<MapData, BucketKey, Bucket> =
            HashMap::try_from(Map::LruHashMap(open(pin_dir, "BUCKETS")?))
                .map_err(|e| anyhow!("BUCKETS: {e}"))?;
        let _ = writeln!(
            out,
            "state: {} flows, {} rate-limit buckets",
            flows.keys().count(),
            buckets.keys().count()
        );
    }
    Ok(out)
}
