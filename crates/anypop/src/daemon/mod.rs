//! What `anypop run` does on a node: the glue between the network file and the data plane, and
//! the daemon's life (lock, control socket, file watch, stop and `down`).
pub mod backend;
pub mod control;
pub mod down;
pub mod notify;
pub mod pop;
pub mod run;
pub mod watch;

use std::path::{Path, PathBuf};

use anyhow::anyhow;

pub use backend::BackendNode;
pub use pop::{Pop, probe_next_hops};
pub use watch::FileWatch;

use crate::config::{Network, Role};

/// One line describing a network file.
pub fn describe(net: &Network) -> String {
    let pops = net.nodes.iter().filter(|n| n.role == Role::Pop).count();
    let backends = net.nodes.iter().filter(|n| n.role == Role::Backend).count();
    format!(
        "{} services, {} rules, {} profiles, {} nodes ({} pops, {} backends)",
        net.services.len(),
        net.rules.len(),
        net.profiles.len(),
        net.nodes.len(),
        pops,
        backends
    )
}

/// Pin directories of this node under other layout versions next to `pin_root` (`…/v1/<node>`
/// beside `…/v2`): a data plane of an incompatible anypop may still run from them.
fn other_layouts(pin_root: &Path, node: &str) -> Vec<PathBuf> {
    let (Some(parent), Some(ours)) = (pin_root.parent(), pin_root.file_name()) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let n = name.to_string_lossy();
            name != ours
                && n.strip_prefix('v')
                    .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
        })
        .map(|e| e.path().join(node))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found
}

/// An attach failure, with what to do when another layout version's pins explain it.
pub(crate) fn explain_other_layouts(
    e: anyhow::Error,
    pin_root: &Path,
    node: &str,
) -> anyhow::Error {
    let others = other_layouts(pin_root, node);
    if others.is_empty() {
        return e;
    }
    let list: Vec<String> = others.iter().map(|p| p.display().to_string()).collect();
    anyhow!(
        "{e:#}\nPins of node {node} with another layout version exist: {}. A data plane of an incompatible anypop version probably still runs here; this version does not touch it. Stop it with that version (anypop run --detach), or remove those pins and detach its programs (ip link set dev IF xdp off)",
        list.join(", ")
    )
}
