//! Pinned attachments: how the data plane outlives the daemon and how a new daemon (or a new
//! anypop version) takes it over without a gap.
//!
//! A daemon that stops without `--detach` pins each attachment (a `bpf_link`) under the node's pin
//! directory: the programs keep running on the interfaces with the pinned maps. The next daemon
//! finds the pin, checks that the link runs a program anypop ships (by name), and replaces the
//! program through `bpf_link_update` on that very link: the interface is never without a program
//! and state maps are shared, so no packet is lost and no flow moves.
use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, PinnedLink};

use super::{DataplaneError, edge::AttachMode};

/// Where the attachment of `kind` ("xdp" or "tc") on `ifname` is pinned.
pub fn pin_path(pin_dir: &Path, kind: &str, ifname: &str) -> PathBuf {
    match kind {
        "xdp" => pin_dir.join(format!("link_{ifname}")),
        other => pin_dir.join(format!("link_{other}_{ifname}")),
    }
}

/// The pinned link at `path`, if any, after checking that it runs the program `expected` (one
/// of ours). A link running anything else is refused, with what to do about it.
pub fn adoptable(path: &Path, expected: &str) -> Result<Option<FdLink>, DataplaneError> {
    if !path.exists() {
        return Ok(None);
    }
    let pinned = PinnedLink::from_pin(path).map_err(|e| DataplaneError::Attach {
        ifname: path.display().to_string(),
        detail: format!(
            "cannot open the pinned attachment: {e}; if it is stale, remove it (rm {})",
            path.display()
        ),
    })?;
    let link: FdLink = pinned.into();
    let prog_id = link
        .info()
        .map_err(|e| DataplaneError::Map(format!("link info of {}: {e}", path.display())))?
        .program_id();
    let name = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == prog_id)
        .and_then(|p| p.name_as_str().map(str::to_owned))
        .unwrap_or_default();
    if name != expected {
        return Err(DataplaneError::Attach {
            ifname: path.display().to_string(),
            detail: format!(
                "the pinned attachment runs program {name:?} (id {prog_id}), not anypop's {expected:?}; anypop does not replace programs it did not ship. Remove the pin (rm {}) and detach that program if it is stale",
                path.display()
            ),
        });
    }
    Ok(Some(link))
}

/// How `ifname` (in this thread's network namespace) runs XDP now, as the kernel reports it.
pub fn xdp_mode(ifname: &str) -> Option<AttachMode> {
    let out = std::process::Command::new("ip")
        .args(["-d", "link", "show", "dev", ifname])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // The mode is a flag on the first line ("… mtu 1500 xdpgeneric qdisc …"); the program line
    // reads "prog/xdp id N" in every mode.
    if text.contains(" xdpgeneric") {
        Some(AttachMode::Generic)
    } else if text.contains("prog/xdp") {
        Some(AttachMode::Native)
    } else {
        None
    }
}

/// Pins `link` at `path` (replacing an older pin of the same attachment).
pub fn pin(link: FdLink, path: &Path) -> Result<PathBuf, DataplaneError> {
    let _ = std::fs::remove_file(path);
    link.pin(path)
        .map_err(|e| DataplaneError::Map(format!("pin link {}: {e}", path.display())))?;
    Ok(path.to_owned())
}
