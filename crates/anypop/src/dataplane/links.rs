//! Pinned attachments: how the data plane outlives the daemon and how a new daemon (or a new
//! anypop version) takes it over without a gap.
//!
//! Each attachment (a `bpf_link`) is pinned under the node's pin directory the moment it is made:
//! the programs keep running on the interfaces with the pinned maps however the daemon ends. The
//! next daemon finds the pin, checks that the link is alive and runs a program anypop ships (by
//! name), and replaces the program through `bpf_link_update` on that very link: the interface is
//! never without a program and state maps are shared, so no packet is lost and no flow moves.
//! [`attach_xdp`] and [`attach_tc`] are that sequence, for every program anypop attaches.
use std::path::{Path, PathBuf};

use aya::programs::{
    ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
    links::{FdLink, LinkError, PinnedLink},
    tc::SchedClassifierLink,
    xdp::XdpLink,
};

use super::DataplaneError;

/// How an XDP program ended up attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    Native,
    Generic,
}

impl std::fmt::Display for AttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        })
    }
}

/// The step `what` of attaching to `ifname` failed with `source`.
pub(super) fn attach_error(
    ifname: &str,
    what: impl Into<String>,
    source: impl std::error::Error + Send + Sync + 'static,
) -> DataplaneError {
    DataplaneError::AttachStep {
        ifname: ifname.to_owned(),
        what: what.into(),
        source: Box::new(source),
    }
}

/// What adopting a pinned link needs of a program kind: its link type and aya's calls on it,
/// which each kind has as its own methods.
trait Adopt {
    type Link: TryFrom<FdLink, Error = LinkError>;
    type Id;
    /// The kind of link, as the error names it.
    const LINK: &'static str;
    fn replace(&mut self, link: Self::Link) -> Result<Self::Id, ProgramError>;
    fn take(&mut self, id: Self::Id) -> Result<Self::Link, ProgramError>;
}

impl Adopt for Xdp {
    type Link = XdpLink;
    type Id = aya::programs::xdp::XdpLinkId;
    const LINK: &'static str = "an XDP link";
    fn replace(&mut self, link: XdpLink) -> Result<Self::Id, ProgramError> {
        self.attach_to_link(link)
    }
    fn take(&mut self, id: Self::Id) -> Result<XdpLink, ProgramError> {
        self.take_link(id)
    }
}

impl Adopt for SchedClassifier {
    type Link = SchedClassifierLink;
    type Id = aya::programs::tc::SchedClassifierLinkId;
    const LINK: &'static str = "a TCX link";
    fn replace(&mut self, link: SchedClassifierLink) -> Result<Self::Id, ProgramError> {
        self.attach_to_link(link)
    }
    fn take(&mut self, id: Self::Id) -> Result<SchedClassifierLink, ProgramError> {
        self.take_link(id)
    }
}

/// Puts `prog` (anypop's program `name`) on the pinned link `fd` that an earlier daemon left
/// running on `ifname`, in one `bpf_link_update`, and logs it (the lab and the tests wait for
/// that line). Returns the link's descriptor; the pin stays as it was.
fn adopt<P: Adopt>(
    prog: &mut P,
    fd: FdLink,
    name: &str,
    ifname: &str,
    pin: &Path,
) -> Result<FdLink, DataplaneError>
where
    FdLink: TryFrom<P::Link, Error = LinkError>,
{
    let link = P::Link::try_from(fd).map_err(|e| {
        let what = format!("the pinned attachment {} is not {}", pin.display(), P::LINK);
        attach_error(ifname, what, e)
    })?;
    let id = prog.replace(link).map_err(|e| {
        let what = format!("replacing the running {name} (bpf_link_update)");
        attach_error(ifname, what, e)
    })?;
    let fd = into_fd_link(ifname, prog.take(id).map_err(take_failed)?)?;
    tracing::info!("adopted the running {name} program on {ifname} (replaced in place)");
    Ok(fd)
}

/// An attachment aya made, taken out of its keeping (which would detach it on drop) as a plain
/// bpf_link descriptor.
fn into_fd_link<L>(ifname: &str, link: L) -> Result<FdLink, DataplaneError>
where
    FdLink: TryFrom<L, Error = LinkError>,
{
    FdLink::try_from(link).map_err(|e| {
        attach_error(
            ifname,
            "this kernel attached without a bpf_link, so it cannot be left running",
            e,
        )
    })
}

fn take_failed(source: ProgramError) -> DataplaneError {
    DataplaneError::Program {
        what: "take link",
        source,
    }
}

/// Attaches the loaded XDP program `prog` (anypop's program `name`) to `ifname` and pins the
/// attachment at `pin` at once — or, when an earlier daemon left it running there, replaces the
/// program on that pinned link in one step (`bpf_link_update`), in whatever mode it runs. A
/// defunct pin (its interface is gone) is replaced by a new attachment. `allow_generic`: fall
/// back to generic (SKB) mode when the driver cannot run XDP natively, instead of failing.
/// Returns the mode and the link's descriptor (a second reference beside the pin).
pub fn attach_xdp(
    prog: &mut Xdp,
    name: &str,
    ifname: &str,
    pin: &Path,
    allow_generic: bool,
) -> Result<(AttachMode, FdLink), DataplaneError> {
    let ifindex = ifindex_of(ifname)?;
    if let Some(fd) = adoptable(pin, name, ifname, ifindex)? {
        let fd = adopt(prog, fd, name, ifname, pin)?;
        return Ok((xdp_mode(ifname).unwrap_or(AttachMode::Native), fd));
    }
    let (id, mode) = match prog.attach(ifname, XdpMode::Driver) {
        Ok(id) => (id, AttachMode::Native),
        Err(native) if allow_generic => {
            let id = prog.attach(ifname, XdpMode::Skb).map_err(|e| {
                attach_error(
                    ifname,
                    format!(
                        // The native failure's whole chain: the source is the generic one.
                        "attaching XDP failed in native mode ({:#}) and in generic mode",
                        anyhow::Error::from(native)
                    ),
                    e,
                )
            })?;
            (id, AttachMode::Generic)
        }
        Err(native) => {
            return Err(DataplaneError::NoNativeXdp {
                ifname: ifname.to_owned(),
                source: native,
            });
        }
    };
    let fd = into_fd_link(ifname, prog.take_link(id).map_err(take_failed)?)?;
    Ok((mode, self::pin(fd, pin)?))
}

/// [`attach_xdp`] for a TC program on `ifname`'s egress (TCX).
pub fn attach_tc(
    prog: &mut SchedClassifier,
    name: &str,
    ifname: &str,
    pin: &Path,
) -> Result<FdLink, DataplaneError> {
    let ifindex = ifindex_of(ifname)?;
    if let Some(fd) = adoptable(pin, name, ifname, ifindex)? {
        return adopt(prog, fd, name, ifname, pin);
    }
    let id = prog
        .attach(ifname, TcAttachType::Egress)
        .map_err(|e| attach_error(ifname, "attaching to TC egress (TCX) failed", e))?;
    let fd = into_fd_link(ifname, prog.take_link(id).map_err(take_failed)?)?;
    self::pin(fd, pin)
}

/// Where the attachment of `kind` ("xdp" or "tc") on `ifname` is pinned.
pub fn pin_path(pin_dir: &Path, kind: &str, ifname: &str) -> PathBuf {
    match kind {
        "xdp" => pin_dir.join(format!("link_{ifname}")),
        other => pin_dir.join(format!("link_{other}_{ifname}")),
    }
}

/// The pinned link at `path`, if it can be adopted for the interface `ifindex`: it must run the
/// program `expected` (one of ours), else it is refused with what to do about it. A *defunct*
/// pin — its interface was deleted (the kernel then reports interface 0) or re-created under a
/// new index — is no attachment at all: it is removed with a warning and `None` returned, so the
/// caller attaches afresh (the pinned maps, and with them flows and rate-limit state, are kept).
pub fn adoptable(
    path: &Path,
    expected: &str,
    ifname: &str,
    ifindex: u32,
) -> Result<Option<FdLink>, DataplaneError> {
    if !path.exists() {
        return Ok(None);
    }
    let attached_to = pinned_link_ifindex(path).map_err(|e| {
        attach_error(
            ifname,
            format!(
                "cannot read the pinned attachment {} (if it is stale, remove it: rm {})",
                path.display(),
                path.display()
            ),
            e,
        )
    })?;
    if attached_to != ifindex {
        let why = if attached_to == 0 {
            "its interface is gone (deleted, or its namespace was)".to_string()
        } else {
            format!(
                "it belongs to interface index {attached_to}, but {ifname} is now index {ifindex} (the interface was re-created)"
            )
        };
        tracing::warn!(
            "the pinned attachment {} is defunct: {why}; replacing it with a new one (pinned maps, flows and rate-limit state are kept)",
            path.display()
        );
        std::fs::remove_file(path).map_err(|e| {
            attach_error(
                ifname,
                format!("removing the defunct pin {}", path.display()),
                e,
            )
        })?;
        return Ok(None);
    }
    let pinned = PinnedLink::from_pin(path).map_err(|e| {
        attach_error(
            ifname,
            format!(
                "cannot open the pinned attachment (if it is stale, remove it: rm {})",
                path.display()
            ),
            e,
        )
    })?;
    let link: FdLink = pinned.into();
    let prog_id = link
        .info()
        .map_err(|source| DataplaneError::LinkInfo {
            path: path.to_owned(),
            source,
        })?
        .program_id();
    let name = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == prog_id)
        .and_then(|p| p.name_as_str().map(str::to_owned))
        .unwrap_or_default();
    if name != expected {
        return Err(DataplaneError::Attach {
            ifname: ifname.to_owned(),
            detail: format!(
                "the pinned attachment {} runs program {name:?} (id {prog_id}), not anypop's {expected:?}; anypop does not replace programs it did not ship. Remove the pin (rm {}) and detach that program if it is stale",
                path.display(),
                path.display()
            ),
        });
    }
    Ok(Some(link))
}

/// The index of `ifname` in this thread's network namespace.
pub fn ifindex_of(ifname: &str) -> Result<u32, DataplaneError> {
    let c = std::ffi::CString::new(ifname).map_err(|_| DataplaneError::Attach {
        ifname: ifname.escape_debug().to_string(),
        detail: "the interface name contains a NUL byte".into(),
    })?;
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(DataplaneError::Attach {
            ifname: ifname.to_owned(),
            detail: "no such interface in this network namespace (`ip link`)".into(),
        }),
        i => Ok(i),
    }
}

/// The interface a pinned XDP or TCX link is attached to, by the kernel's own account
/// (`bpf_link_info`): 0 once the interface is gone. aya's `LinkInfo` does not expose it, so this
/// asks the kernel directly (BPF_OBJ_GET, then BPF_OBJ_GET_INFO_BY_FD).
pub fn pinned_link_ifindex(path: &Path) -> std::io::Result<u32> {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    let cpath = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // union bpf_attr, BPF_OBJ_GET: pathname (u64), bpf_fd (u32), file_flags (u32).
    let mut attr = [0u64; 8];
    attr[0] = cpath.as_ptr() as u64;
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // struct bpf_link_info: type, id, prog_id (u32 each), then a union aligned to 8 whose xdp and
    // tcx members both start with the ifindex (u32) at offset 16.
    let mut info = [0u8; 256];
    let mut attr = [0u64; 8];
    use std::os::fd::AsRawFd;
    attr[0] = (fd.as_raw_fd() as u32 as u64) | ((info.len() as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(u32::from_ne_bytes(
        info[16..20].try_into().expect("4 bytes"),
    ))
}

/// An XDP attachment, named as `ip -d link show` names it (the kernel's facts, over rtnetlink).
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

/// The XDP attachment of `ifname` in this thread's network namespace, if any, as the kernel
/// reports it over rtnetlink.
pub fn seen_xdp(ifname: &str) -> Option<SeenXdp> {
    use crate::sys::netlink::XdpAttach;
    let (mode, id) = crate::sys::netlink::link(ifname).ok()??.xdp?;
    let flag = match mode {
        XdpAttach::Native => "xdp",
        XdpAttach::Generic => "xdpgeneric",
        XdpAttach::Offload => "xdpoffload",
        XdpAttach::Multiple => "xdpmulti",
    };
    let name = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .and_then(|p| p.name_as_str().map(str::to_owned));
    Some(SeenXdp {
        flag: flag.to_string(),
        prog_id: (id != 0).then_some(id),
        prog_name: name,
    })
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

/// Pins `link` at `path` (replacing an older pin of the same attachment) and hands it back: the
/// caller keeps the descriptor, the pin keeps the attachment alive whatever happens to the caller.
pub fn pin(link: FdLink, path: &Path) -> Result<FdLink, DataplaneError> {
    let _ = std::fs::remove_file(path);
    let pinned = link.pin(path).map_err(|source| DataplaneError::PinLink {
        path: path.to_owned(),
        source,
    })?;
    Ok(pinned.into())
}
