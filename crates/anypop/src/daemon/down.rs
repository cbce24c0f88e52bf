//! `anypop down`: removes everything of a node from this machine — its attachments (the
//! programs leave the interfaces), its pinned maps, the VIPs anypop added to `lo`, its run
//! directory — so a node can be retired or started from nothing. `--keep-state` keeps the
//! state maps (flows, rate-limit buckets), so a later `anypop run` continues where it was.
use std::{net::Ipv4Addr, path::Path};

use anyhow::anyhow;

use super::backend::remove_recorded_vips;
use crate::{
    dataplane::node_pin_dir,
    sys::{
        paths::remove_below,
        rundir::{DaemonLock, RUN_BASE, VipRecord, run_dir},
    },
};

/// Maps that hold state rather than config: what `--keep-state` keeps.
pub const STATE_MAPS: &[&str] = &["FLOWS", "BUCKETS", "NEWSRC", "B_FLOWS"];

/// What `down` removed.
#[derive(Debug, Default)]
pub struct Removed {
    pub links: Vec<String>,
    pub maps: Vec<String>,
    pub kept: Vec<String>,
    pub vips: Vec<Ipv4Addr>,
}

impl Removed {
    /// One paragraph for the operator.
    pub fn describe(&self, node: &str) -> String {
        if self.links.is_empty() && self.maps.is_empty() && self.vips.is_empty() {
            return format!("nothing of node {node} was left on this machine");
        }
        let mut out = format!(
            "node {node} is down: {} attachment(s) removed ({}), {} pinned map(s) removed",
            self.links.len(),
            self.links.join(", "),
            self.maps.len()
        );
        if !self.kept.is_empty() {
            out.push_str(&format!(", kept: {}", self.kept.join(", ")));
        }
        if !self.vips.is_empty() {
            let v: Vec<String> = self.vips.iter().map(|v| v.to_string()).collect();
            out.push_str(&format!("; VIPs removed from lo: {}", v.join(", ")));
        }
        out
    }
}

/// Takes node `node` down (see the module's doc). Refused while a daemon runs the node.
pub fn down(pin_root: &Path, node: &str, keep_state: bool) -> anyhow::Result<Removed> {
    crate::config::names::check_node_name(node).map_err(|e| anyhow!(e))?;
    let pin_dir = node_pin_dir(pin_root, node);
    // Holding the node's lock keeps a daemon from starting while we remove its pins.
    let lock = DaemonLock::acquire(&pin_dir, node).map_err(|e| {
        anyhow!("{e:#}\n`anypop down` takes a node down only when no daemon runs it")
    })?;
    let mut removed = Removed::default();
    let mut entries: Vec<String> = match std::fs::read_dir(&pin_dir) {
        Ok(d) => d
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    // Links first: the programs leave the interfaces before their maps go.
    entries.sort_by_key(|n| !n.starts_with("link_"));
    for name in entries {
        let path = pin_dir.join(&name);
        if let Some(what) = name.strip_prefix("link_") {
            remove_below(pin_root, &path)?;
            removed.links.push(what.to_string());
        } else if keep_state && STATE_MAPS.contains(&name.as_str()) {
            removed.kept.push(name);
        } else {
            remove_below(pin_root, &path)?;
            removed.maps.push(name);
        }
    }
    if removed.kept.is_empty() {
        let _ = std::fs::remove_dir(&pin_dir);
    }
    removed.vips = remove_recorded_vips(&VipRecord::of(&pin_dir));
    drop(lock);
    let _ = remove_below(Path::new(RUN_BASE), &run_dir(&pin_dir));
    Ok(removed)
}
