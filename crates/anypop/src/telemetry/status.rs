//! `anypop status`: what a node's data plane is doing, read from its pinned maps — also while no
//! daemon runs (`--leave-running`).
use std::{
    fmt::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context;
use anypop_common::{
    layout::{Bucket, BucketKey, CaptureConfig, Control, Counter, FlowKey, FlowValue},
    verdict::Reason,
};
use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};

use super::{Snapshot, open_pin, pin_dir_present, printable, si};

fn open(pin_dir: &Path, name: &str) -> anyhow::Result<MapData> {
    open_pin(&pin_dir.join(name))
}

fn counters(pin_dir: &Path, name: &str) -> anyhow::Result<Snapshot> {
    let m: PerCpuArray<MapData, Counter> =
        PerCpuArray::try_from(Map::PerCpuArray(open(pin_dir, name)?))
            .with_context(|| name.to_owned())?;
    let by_reason = super::sum_per_cpu(&m).with_context(|| name.to_owned())?;
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

/// An interface running one of this node's programs, and how.
struct Attachment {
    ifname: String,
    generic: bool,
    prog_id: u32,
    prog_name: String,
}

/// Interfaces of this network namespace whose XDP program uses this node's counter map: found by
/// the kernel's own records (program → maps), so no config is needed and nothing is guessed.
fn attachments(counter_map_id: u32) -> Vec<Attachment> {
    let Ok(links) = crate::sys::netlink::links() else {
        return Vec::new();
    };
    let programs: Vec<aya::programs::ProgramInfo> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .collect();
    let mut found = Vec::new();
    for link in links {
        let Some((mode, id)) = link.xdp else {
            continue;
        };
        let Some(p) = programs.iter().find(|p| p.id() == id) else {
            continue;
        };
        let ours = p
            .map_ids()
            .ok()
            .flatten()
            .is_some_and(|ids| ids.contains(&counter_map_id));
        if ours {
            found.push(Attachment {
                ifname: link.name,
                generic: mode == crate::sys::netlink::XdpAttach::Generic,
                prog_id: id,
                prog_name: p.name_as_str().unwrap_or("?").to_owned(),
            });
        }
    }
    found
}

/// The top `n` entries of the live generation's slice of a hit-counter map, by packets in the
/// window: (name, total packets, rate).
fn top(
    a: &[Counter],
    b: &[Counter],
    generation: usize,
    names: &[String],
    secs: f64,
    n: usize,
) -> Vec<(String, u64, f64)> {
    let half = b.len() / 2;
    let base = generation * half;
    let mut v: Vec<(String, u64, f64)> = (0..half)
        .filter_map(|i| {
            let (x, y) = (a.get(base + i)?, b.get(base + i)?);
            (y.packets > 0).then(|| {
                (
                    names
                        .get(i)
                        .map(|n| printable(n).into_owned())
                        .unwrap_or_else(|| format!("#{i}")),
                    y.packets,
                    (y.packets - x.packets) as f64 / secs,
                )
            })
        })
        .collect();
    v.sort_by(|x, y| y.2.total_cmp(&x.2).then(y.1.cmp(&x.1)));
    v.truncate(n);
    v
}

/// The status report of the node whose pins are in `pin_dir`; rates over `window`.
pub fn report(pin_dir: &Path, node: &str, window: Duration) -> anyhow::Result<String> {
    report_named(pin_dir, node, window, &crate::compile::Names::default())
}

/// [`report`] with the names of rules and services.
pub fn report_named(
    pin_dir: &Path,
    node: &str,
    window: Duration,
    names: &crate::compile::Names,
) -> anyhow::Result<String> {
    let shown = printable(node);
    let node: &str = &shown;
    let present = pin_dir_present(pin_dir)?;
    let edge = present && pin_dir.join("COUNTERS").exists();
    let backend = present && pin_dir.join("B_COUNTERS").exists();
    if !edge && !backend {
        anyhow::bail!(
            "no data plane pinned for node {node} in {} (is it running? start it with anypop run)",
            printable(&pin_dir.to_string_lossy())
        );
    }
    let mut out = String::new();
    write_header(&mut out, pin_dir, node, edge);
    let generation = if edge {
        write_config(&mut out, pin_dir, names)?
    } else {
        0
    };
    let w = Window::measure(pin_dir, edge, window)?;
    write_attachments(&mut out, &w);
    write_verdicts(&mut out, &w);
    if edge {
        for (title, list) in [
            (
                "top services",
                top(
                    &w.services.0,
                    &w.services.1,
                    generation,
                    &names.services,
                    w.secs,
                    5,
                ),
            ),
            (
                "top rules",
                top(&w.rules.0, &w.rules.1, generation, &names.rules, w.secs, 5),
            ),
        ] {
            write_top(&mut out, title, list);
        }
        write_state(&mut out, pin_dir)?;
    }
    Ok(out)
}

/// The node line (POP or backend, where its pins are) and whether its daemon runs.
fn write_header(out: &mut String, pin_dir: &Path, node: &str, edge: bool) {
    let _ = writeln!(
        out,
        "node {node} ({} data plane, pins {})",
        if edge { "POP" } else { "backend" },
        printable(&pin_dir.to_string_lossy())
    );
    // The lock, not the pid file: a pid is reused by any process once the daemon is gone.
    let pid = crate::sys::rundir::running_pid(pin_dir).map(|p| p.to_string());
    let links: Vec<String> = std::fs::read_dir(pin_dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_prefix("link_").map(|l| printable(l).into_owned()))
                })
                .collect()
        })
        .unwrap_or_default();
    let _ = match (&pid, links.is_empty()) {
        (Some(p), _) => writeln!(out, "daemon: running (pid {p})"),
        (None, false) => writeln!(
            out,
            "daemon: not running; data plane left running on {}",
            links.join(", ")
        ),
        (None, true) => writeln!(out, "daemon: not running"),
    };
}

/// An edge's live config (hash, switch count, slot) and capture request; returns the live slot.
fn write_config(
    out: &mut String,
    pin_dir: &Path,
    names: &crate::compile::Names,
) -> anyhow::Result<usize> {
    let c: Array<MapData, Control> =
        Array::try_from(Map::Array(open(pin_dir, "CONTROL")?)).context("CONTROL")?;
    let c = c.get(&0, 0).context("CONTROL")?;
    let generation = c.active_gen as usize;
    let settings: Array<MapData, anypop_common::layout::Settings> =
        Array::try_from(Map::Array(open(pin_dir, "SETTINGS")?)).context("SETTINGS")?;
    let hash = settings
        .get(&c.active_gen, 0)
        .map(|s| s.config_hash)
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "config: {hash:016x} (hash of the network file), switch #{}, live slot {}",
        c.version, c.active_gen
    );
    // A data plane from before capture has no CAPTURE map: nothing to say.
    if pin_dir.join("CAPTURE").exists() {
        let cap: Array<MapData, CaptureConfig> =
            Array::try_from(Map::Array(open(pin_dir, "CAPTURE")?)).context("CAPTURE")?;
        let c = cap.get(&0, 0).context("CAPTURE")?;
        let _ = writeln!(
            out,
            "capture: {}",
            super::capture::describe(&c, super::monotonic_secs(), names)
        );
    }
    Ok(generation)
}

/// A program's run-time statistics: (ns run, runs).
type Cost = (u64, u64);

/// Everything read at both ends of the window: verdict counters, rule and service hits (edge
/// only), and the cost counters of each attached program.
struct Window {
    attached: Vec<Attachment>,
    /// (before, after) for each attachment's program: (run ns, runs).
    cost: (Vec<Cost>, Vec<Cost>),
    verdicts: (Snapshot, Snapshot),
    rules: (Vec<Counter>, Vec<Counter>),
    services: (Vec<Counter>, Vec<Counter>),
    secs: f64,
}

impl Window {
    fn measure(pin_dir: &Path, edge: bool, window: Duration) -> anyhow::Result<Window> {
        let name = if edge { "COUNTERS" } else { "B_COUNTERS" };
        let counter_map_id = open(pin_dir, name)?
            .info()
            .with_context(|| name.to_string())?
            .id();
        let attached = attachments(counter_map_id);
        // The programs' own cost: run-time statistics on for the window only (they cost a little).
        let stats = crate::dataplane::edge::enable_cost_stats().ok();
        let hits = |map: &str| -> anyhow::Result<Vec<Counter>> {
            if !edge {
                return Ok(Vec::new());
            }
            Ok(counters(pin_dir, map)?.by_reason)
        };
        let cost = || -> Vec<(u64, u64)> {
            attached
                .iter()
                .map(|a| crate::dataplane::links::program_cost(a.prog_id).unwrap_or((0, 0)))
                .collect()
        };
        let (rules_a, services_a) = (hits("RULE_HITS")?, hits("SVC_HITS")?);
        let cost_a = cost();
        let a = counters(pin_dir, name)?;
        let t0 = Instant::now();
        std::thread::sleep(window);
        let b = counters(pin_dir, name)?;
        let secs = t0.elapsed().as_secs_f64();
        let cost_b = cost();
        let (rules_b, services_b) = (hits("RULE_HITS")?, hits("SVC_HITS")?);
        drop(stats);
        Ok(Window {
            attached,
            cost: (cost_a, cost_b),
            verdicts: (a, b),
            rules: (rules_a, rules_b),
            services: (services_a, services_b),
            secs,
        })
    }
}

/// One line per interface running the node's programs: XDP mode, program, cost in the window.
fn write_attachments(out: &mut String, w: &Window) {
    let (cost_a, cost_b, secs) = (&w.cost.0, &w.cost.1, w.secs);
    if w.attached.is_empty() {
        let _ = writeln!(
            out,
            "interfaces: none in this network namespace runs this node's programs"
        );
    }
    // One program can be attached to several interfaces: its cost is shared by them.
    for (i, att) in w.attached.iter().enumerate() {
        let (dt, dn) = (
            cost_b[i].0.saturating_sub(cost_a[i].0),
            cost_b[i].1.saturating_sub(cost_a[i].1),
        );
        let cost_text = match dt.checked_div(dn) {
            None => "no packets in the window".to_string(),
            Some(per_packet) => format!(
                "{per_packet} ns/packet, {:.1}% of one CPU ({} runs/s, all its interfaces)",
                100.0 * dt as f64 / 1e9 / secs,
                si(dn as f64 / secs)
            ),
        };
        let _ = writeln!(
            out,
            "interface {}: {} XDP, program {} (id {}): {cost_text}",
            printable(&att.ifname),
            if att.generic { "GENERIC" } else { "native" },
            printable(&att.prog_name),
            att.prog_id
        );
        if att.generic {
            let _ = writeln!(
                out,
                "  PROBLEM: generic XDP runs after the kernel allocated the packet: a fraction of native speed. Usual causes: a driver without native XDP, LRO on (ethtool -K {0} lro off). Check with: anypop doctor --interface {0}",
                printable(&att.ifname)
            );
        }
    }
}

/// The verdict table: every reason seen, its total and its rate over the window.
fn write_verdicts(out: &mut String, w: &Window) {
    let (a, b, secs) = (&w.verdicts.0, &w.verdicts.1, w.secs);
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
}

/// A top list ([`top`]) under its title; nothing when it is empty.
fn write_top(out: &mut String, title: &str, list: Vec<(String, u64, f64)>) {
    if list.is_empty() {
        return;
    }
    let _ = writeln!(out, "{title} (total packets, rate):");
    for (n, total, rate) in list {
        let _ = writeln!(out, "  {n:<20} {total:>14} {:>10}/s", si(rate));
    }
}

/// How full the edge's state tables (flows, rate-limit buckets) are, with a warning near full.
fn write_state(out: &mut String, pin_dir: &Path) -> anyhow::Result<()> {
    let flows_data = open(pin_dir, "FLOWS")?;
    let buckets_data = open(pin_dir, "BUCKETS")?;
    let flow_max = flows_data.info().map(|i| i.max_entries()).unwrap_or(0);
    let bucket_max = buckets_data.info().map(|i| i.max_entries()).unwrap_or(0);
    let flows: HashMap<MapData, FlowKey, FlowValue> =
        HashMap::try_from(Map::LruHashMap(flows_data)).context("FLOWS")?;
    let buckets: HashMap<MapData, BucketKey, Bucket> =
        HashMap::try_from(Map::LruHashMap(buckets_data)).context("BUCKETS")?;
    let (nf, nb) = (flows.keys().count(), buckets.keys().count());
    let pct = |n: usize, max: u32| 100.0 * n as f64 / max.max(1) as f64;
    let _ = writeln!(
        out,
        "state: flows {nf} of {flow_max} ({:.1}%), rate-limit buckets {nb} of {bucket_max} ({:.1}%)",
        pct(nf, flow_max),
        pct(nb, bucket_max)
    );
    if pct(nf, flow_max) > 90.0 || pct(nb, bucket_max) > 90.0 {
        let _ = writeln!(
            out,
            "  WARNING: a state table is nearly full: its LRU evicts players' flows or buckets. Raise flow_table_size / bucket_table_size in [defaults] (takes a restart)"
        );
    }
    Ok(())
}
