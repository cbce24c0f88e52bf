//! What a driver reports about its interface through the ethtool ioctl (SIOCETHTOOL on a socket,
//! answered for the calling thread's network namespace): the driver's name, the offload
//! features, the channel (queue) counts and the RSS indirection table's size — the facts
//! `ethtool -i/-k/-l/-x` print, asked of the kernel instead of read from the tool's text.
//!
//! Each request fills a `struct ethtool_*` of linux/ethtool.h; the layouts are spelled out here
//! (`#[repr(C)]`), with the variable-length ones (strings, feature blocks) in buffers sized from
//! the kernel's own counts.
use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

const ETHTOOL_GDRVINFO: u32 = 0x03;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GRXRINGS: u32 = 0x2d;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GRXFHINDIR: u32 = 0x38;
const ETHTOOL_GFEATURES: u32 = 0x3a;
const ETHTOOL_GCHANNELS: u32 = 0x3c;
/// The string set of the netdev feature names (`enum ethtool_stringset`).
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;

/// Why the kernel gave no answer; a refused request keeps its errno (EOPNOTSUPP: the driver
/// does not implement it).
#[derive(Debug, thiserror::Error)]
pub enum EthtoolError {
    #[error("{0:?} is not an interface name the kernel accepts")]
    BadName(String),
    #[error("opening a socket for the ethtool ioctl: {source}")]
    Socket {
        #[source]
        source: io::Error,
    },
    #[error("{request} on {ifname}: {source}")]
    Ioctl {
        ifname: String,
        request: &'static str,
        #[source]
        source: io::Error,
    },
    /// The kernel's answer contradicts itself (a count that changed between two requests).
    #[error("{request} on {ifname}: {what}")]
    Answer {
        ifname: String,
        request: &'static str,
        what: String,
    },
}

impl EthtoolError {
    /// The errno of a refused request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            EthtoolError::Ioctl { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// The driver does not implement the request.
    pub fn unsupported(&self) -> bool {
        self.errno() == Some(libc::EOPNOTSUPP)
    }
}

/// Sends one SIOCETHTOOL request for `ifname` with `data` as the `struct ethtool_*` (its first
/// `u32` is the command).
///
/// # Safety
/// `data` must point to a buffer that is valid, writable and large enough for everything the
/// kernel writes back for that command.
unsafe fn ioctl(
    ifname: &str,
    request: &'static str,
    data: *mut libc::c_void,
) -> Result<(), EthtoolError> {
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ || ifname.contains('\0') {
        return Err(EthtoolError::BadName(ifname.to_string()));
    }
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(EthtoolError::Socket {
            source: io::Error::last_os_error(),
        });
    }
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, b) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
        *dst = b as libc::c_char;
    }
    req.ifr_ifru.ifru_data = data.cast();
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCETHTOOL, &mut req) } != 0 {
        return Err(EthtoolError::Ioctl {
            ifname: ifname.to_string(),
            request,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// `struct ethtool_drvinfo`; only `driver` is read, the rest is there for the kernel to fill.
#[repr(C)]
#[allow(dead_code)]
struct DrvInfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

/// The name of the interface's driver (ETHTOOL_GDRVINFO; `ethtool -i`): `veth`, `mlx5_core`, …
/// Virtual devices have one too. Empty when the driver leaves it blank.
pub fn driver(ifname: &str) -> Result<String, EthtoolError> {
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    unsafe { ioctl(ifname, "ETHTOOL_GDRVINFO", (&raw mut info).cast())? };
    Ok(c_string(&info.driver))
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// One netdev feature (an offload) as the kernel keeps it for the interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Feature {
    /// The kernel's name: `rx-lro`, `rx-gro-hw`, `tx-checksum-ip-generic`, …
    pub name: String,
    /// The driver lets it be switched (`hw_features`).
    pub available: bool,
    /// Asked for (`wanted_features`).
    pub requested: bool,
    /// In effect (`features`).
    pub active: bool,
    /// Never switchable, whatever the driver (NETIF_F_NEVER_CHANGE).
    pub never_changed: bool,
}

impl Feature {
    /// What `ethtool -k` marks `[fixed]`: it cannot be switched.
    pub fn fixed(&self) -> bool {
        !self.available || self.never_changed
    }
}

/// `struct ethtool_sset_info` with room for one count.
#[repr(C)]
#[allow(dead_code)]
struct SsetInfo {
    cmd: u32,
    reserved: u32,
    sset_mask: u64,
    data: [u32; 1],
}

/// How many strings the string set `set` has for this interface (0 if the kernel has no such
/// set).
fn sset_count(ifname: &str, set: u32) -> Result<usize, EthtoolError> {
    let mut info = SsetInfo {
        cmd: ETHTOOL_GSSET_INFO,
        reserved: 0,
        sset_mask: 1 << set,
        data: [0],
    };
    unsafe { ioctl(ifname, "ETHTOOL_GSSET_INFO", (&raw mut info).cast())? };
    Ok(if info.sset_mask & (1 << set) != 0 {
        info.data[0] as usize
    } else {
        0
    })
}

/// The `count` strings of string set `set` (ETHTOOL_GSTRINGS: `struct ethtool_gstrings`, three
/// `u32`s, then 32 bytes per string).
fn strings(ifname: &str, set: u32, count: usize) -> Result<Vec<String>, EthtoolError> {
    // In u32s so the header is aligned: cmd, string_set, len, then the strings.
    let mut buf = vec![0u32; 3 + count * ETH_GSTRING_LEN / 4];
    buf[0] = ETHTOOL_GSTRINGS;
    buf[1] = set;
    buf[2] = count as u32;
    // The kernel writes as many strings as the set has: `count`, read from the same kernel a
    // moment ago (for the feature names a constant of the kernel build).
    unsafe { ioctl(ifname, "ETHTOOL_GSTRINGS", buf.as_mut_ptr().cast())? };
    if buf[2] as usize != count {
        return Err(EthtoolError::Answer {
            ifname: ifname.to_string(),
            request: "ETHTOOL_GSTRINGS",
            what: format!("{} strings where {count} were announced", buf[2]),
        });
    }
    let bytes: Vec<u8> = buf[3..].iter().flat_map(|w| w.to_ne_bytes()).collect();
    Ok(bytes.chunks(ETH_GSTRING_LEN).map(c_string).collect())
}

/// Every netdev feature of the interface with its state (ETHTOOL_GSSET_INFO and ETHTOOL_GSTRINGS
/// for the names, ETHTOOL_GFEATURES for the bits; what `ethtool -k` shows). Features without a
/// name are left out, as ethtool does.
pub fn features(ifname: &str) -> Result<Vec<Feature>, EthtoolError> {
    let count = sset_count(ifname, ETH_SS_FEATURES)?;
    let names = strings(ifname, ETH_SS_FEATURES, count)?;
    // `struct ethtool_gfeatures`: cmd, size (in blocks), then per block of 32 features the
    // words available, requested, active, never_changed.
    let blocks = count.div_ceil(32);
    let mut buf = vec![0u32; 2 + 4 * blocks];
    buf[0] = ETHTOOL_GFEATURES;
    buf[1] = blocks as u32;
    // The kernel writes at most `size` blocks.
    unsafe { ioctl(ifname, "ETHTOOL_GFEATURES", buf.as_mut_ptr().cast())? };
    let bit = |i: usize, word: usize| buf[2 + 4 * (i / 32) + word] & (1 << (i % 32)) != 0;
    Ok(names
        .into_iter()
        .enumerate()
        .filter(|(_, name)| !name.is_empty())
        .map(|(i, name)| Feature {
            name,
            available: bit(i, 0),
            requested: bit(i, 1),
            active: bit(i, 2),
            never_changed: bit(i, 3),
        })
        .collect())
}

/// The most channels (queues) of each kind the device can have, and how many it has now (0: none
/// of that kind). The fields are those of `struct ethtool_channels` after its command, in its
/// order, so the kernel fills this struct itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Channels {
    pub max_rx: u32,
    pub max_tx: u32,
    pub max_other: u32,
    pub max_combined: u32,
    pub rx: u32,
    pub tx: u32,
    pub other: u32,
    pub combined: u32,
}

/// `struct ethtool_channels`: the command, then the counts.
#[repr(C)]
#[allow(dead_code)]
struct RawChannels {
    cmd: u32,
    counts: Channels,
}

/// The channel counts (ETHTOOL_GCHANNELS; `ethtool -l`). Drivers without channels refuse with
/// EOPNOTSUPP.
pub fn channels(ifname: &str) -> Result<Channels, EthtoolError> {
    let mut raw = RawChannels {
        cmd: ETHTOOL_GCHANNELS,
        counts: Channels::default(),
    };
    unsafe { ioctl(ifname, "ETHTOOL_GCHANNELS", (&raw mut raw).cast())? };
    Ok(raw.counts)
}

/// `struct ethtool_rxnfc` (192 bytes on 64-bit kernels), with room to spare; only `data` is read.
#[repr(C)]
#[allow(dead_code)]
struct Rxnfc {
    cmd: u32,
    flow_type: u32,
    data: u64,
    rest: [u64; 30],
}

/// The number of RX rings flows can be steered to (ETHTOOL_GRXRINGS; the count `ethtool -x`
/// prints before the table).
pub fn rx_rings(ifname: &str) -> Result<u64, EthtoolError> {
    let mut r = Rxnfc {
        cmd: ETHTOOL_GRXRINGS,
        flow_type: 0,
        data: 0,
        rest: [0; 30],
    };
    unsafe { ioctl(ifname, "ETHTOOL_GRXRINGS", (&raw mut r).cast())? };
    Ok(r.data)
}

/// `struct ethtool_rxfh_indir` without its table: with `size` 0 the kernel only says the size.
#[repr(C)]
#[allow(dead_code)]
struct RxfhIndir {
    cmd: u32,
    size: u32,
}

/// The size of the RSS indirection table (ETHTOOL_GRXFHINDIR asked for its size only; the table
/// `ethtool -x` prints). Devices without one refuse with EOPNOTSUPP.
pub fn indirection_size(ifname: &str) -> Result<u32, EthtoolError> {
    let mut r = RxfhIndir {
        cmd: ETHTOOL_GRXFHINDIR,
        size: 0,
    };
    unsafe { ioctl(ifname, "ETHTOOL_GRXFHINDIR", (&raw mut r).cast())? };
    Ok(r.size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::testns::{in_private_netns, sh};

    fn feature<'a>(all: &'a [Feature], name: &str) -> &'a Feature {
        all.iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no feature {name}"))
    }

    #[test]
    fn a_veth_reports_its_driver_features_and_channels() {
        in_private_netns(|| {
            sh(&[
                "ip", "link", "add", "e0", "type", "veth", "peer", "name", "e1",
            ]);
            assert_eq!(driver("e0").unwrap(), "veth");
            let f = features("e0").unwrap();
            assert!(f.len() > 50, "{}", f.len());
            let lro = feature(&f, "rx-lro");
            assert!(!lro.active && lro.fixed(), "{lro:?}");
            // veth checksums in "hardware" by default; `ethtool -K tx off` switches that off.
            assert!(feature(&f, "tx-checksum-ip-generic").active);
            assert!(!feature(&f, "tx-checksum-ip-generic").fixed());
            sh(&["ethtool", "-K", "e0", "tx", "off"]);
            let f = features("e0").unwrap();
            assert!(
                f.iter()
                    .filter(|f| f.name.starts_with("tx-checksum-"))
                    .all(|f| !f.active)
            );
            assert!(!feature(&f, "tx-checksum-ip-generic").requested);
            let ch = channels("e0").unwrap();
            assert!(ch.max_rx >= 1 && ch.rx == 1, "{ch:?}");
            assert_eq!((ch.max_combined, ch.combined), (0, 0));
            if ch.max_rx >= 2 {
                sh(&["ethtool", "-L", "e0", "rx", "2"]);
                assert_eq!(channels("e0").unwrap().rx, 2);
            }
            // veth has no RSS: neither ring count nor indirection table.
            assert!(rx_rings("e0").unwrap_err().unsupported());
            assert!(indirection_size("e0").unwrap_err().unsupported());
        });
    }

    #[test]
    fn refusals_keep_their_errno() {
        in_private_netns(|| {
            sh(&["ip", "link", "add", "b0", "type", "bridge"]);
            let e = channels("b0").unwrap_err();
            assert!(e.unsupported(), "{e}");
            assert!(
                e.to_string().starts_with("ETHTOOL_GCHANNELS on b0: "),
                "{e}"
            );
            assert_eq!(driver("b0").unwrap(), "bridge");
            assert!(!features("b0").unwrap().is_empty());
            let e = driver("nosuch0").unwrap_err();
            assert_eq!(e.errno(), Some(libc::ENODEV), "{e}");
            assert!(matches!(
                driver("a-name-far-too-long"),
                Err(EthtoolError::BadName(_))
            ));
        });
    }
}
