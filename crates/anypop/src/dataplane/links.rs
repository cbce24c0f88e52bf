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

/// An XDP attachment as `ip -d link show` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenXdp {
    /// The mode flag: `xdp` (native), `xdpdrv`, `xdpgeneric`, `xdpoffload` or `xdpmulti`.
    pub flag: String,
    pub prog_id: Option<u32>,
    pub prog_name: Option<String>,
}

impl SeenXdp {
    pub fn mode(&self) -> AttachMode {
        if self.flag == "xdpgeneric" {
            AttachMode::Generic
        } else {
            AttachMode::Native
        }
    }
}

/// Finds the XDP attachment in `ip -d link show` output (multi-line, or one line per interface
/// with `-o`): the mode is a flag word on the interface line (`mtu 1500 xdpgeneric qdisc …`), the
/// program follows as `prog/xdp id 42 name edge …` in every mode. The one reader of this output.
pub fn parse_ip_link_xdp(text: &str) -> Option<SeenXdp> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let flag = words.iter().find(|w| {
        matches!(
            **w,
            "xdp" | "xdpgeneric" | "xdpdrv" | "xdpoffload" | "xdpmulti"
        )
    })?;
    let prog = words.iter().position(|w| w.starts_with("prog/xdp"));
    let field = |k: &str| {
        let start = prog?;
        let i = words[start..].iter().position(|w| *w == k)? + start;
        words.get(i + 1).copied()
    };
    Some(SeenXdp {
        flag: flag.to_string(),
        prog_id: field("id").and_then(|id| id.parse().ok()),
        prog_name: field("name").map(str::to_owned),
    })
}

/// The XDP attachment of `ifname` in this thread's network namespace, if any.
pub fn seen_xdp(ifname: &str) -> Option<SeenXdp> {
    let out = std::process::Command::new("ip")
        .args(["-d", "link", "show", "dev", ifname])
        .output()
        .ok()?;
    parse_ip_link_xdp(&String::from_utf8_lossy(&out.stdout))
}

/// (nanoseconds run, runs) of program `id` from the kernel's run-time statistics (they advance
/// only while statistics are enabled).
pub fn program_cost(id: u32) -> Option<(u64, u64)> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .map(|p| (p.run_time().as_nanos() as u64, p.run_count()))
}

/// How `ifname` (in this thread's network namespace) runs XDP now.
pub fn xdp_mode(ifname: &str) -> Option<AttachMode> {
    seen_xdp(ifname).map(|x| x.mode())
}

/// Pins `link` at `path` (replacing an older pin of the same attachment).
pub fn pin(link: FdLink, path: &Path) -> Result<PathBuf, DataplaneError> {
    let _ = std::fs::remove_file(path);
    link.pin(path)
        .map_err(|e| DataplaneError::Map(format!("pin link {}: {e}", path.display())))?;
    Ok(path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mode_and_program_from_both_ip_link_layouts() {
        let multi = "7: t0@t1: <UP> mtu 1500 xdp qdisc noqueue state UP\n    link/ether 02:36:a9:64:42:84\n    prog/xdp id 42 name edge tag 8b jited\n";
        let x = parse_ip_link_xdp(multi).unwrap();
        assert_eq!(
            (x.mode(), x.prog_id, x.prog_name.as_deref()),
            (AttachMode::Native, Some(42), Some("edge"))
        );
        let one_line = "3: d0: <UP> mtu 1500 xdpgeneric qdisc noqueue \\    link/ether c2:8f \\    prog/xdp id 9 name decap tag 99";
        let x = parse_ip_link_xdp(one_line).unwrap();
        assert_eq!((x.mode(), x.prog_id), (AttachMode::Generic, Some(9)));
        assert_eq!(parse_ip_link_xdp("3: t0: <UP> mtu 1500 qdisc noop\n"), None);
    }
}
