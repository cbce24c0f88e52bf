//! Interface facts from the kernel (index, MAC address, MTU), asked of the calling thread's
//! network namespace with ioctls on a socket — never read from /sys/class/net, which answers for
//! the namespace sysfs was mounted in, and never parsed from a command's output.
use anyhow::{anyhow, bail};
use std::ffi::CString;

/// The interface index of `ifname` in this network namespace, or a message saying how to fix it.
pub fn ifindex(ifname: &str, node: &str) -> anyhow::Result<u32> {
    let c = CString::new(ifname)
        .map_err(|_| anyhow!("interface name {ifname:?} contains a NUL byte"))?;
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        bail!(
            "interface {ifname} (node {node}) does not exist on this machine; check `interfaces` of node {node} in the network file against `ip link`"
        );
    }
    Ok(idx)
}

/// Asks the kernel about an interface with an `ifreq` ioctl on a socket, which answers for the
/// calling thread's network namespace (/sys/class/net would answer for the namespace sysfs was
/// mounted in).
pub(crate) fn ifreq_ioctl(
    ifname: &str,
    request: libc::c_ulong,
    what: &str,
) -> anyhow::Result<libc::ifreq> {
    ifreq_ioctl_with(ifname, request, what, |_| {})
}

/// [`ifreq_ioctl`] with a chance to fill the request first (e.g. `ifru_data` for SIOCETHTOOL).
pub(crate) fn ifreq_ioctl_with(
    ifname: &str,
    request: libc::c_ulong,
    what: &str,
    prepare: impl FnOnce(&mut libc::ifreq),
) -> anyhow::Result<libc::ifreq> {
    if ifname.len() >= libc::IFNAMSIZ {
        bail!("interface name {ifname:?} is too long");
    }
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        bail!("socket: {}", std::io::Error::last_os_error());
    }
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in ifname.bytes().enumerate() {
        req.ifr_name[i] = b as libc::c_char;
    }
    prepare(&mut req);
    let rc = unsafe { libc::ioctl(fd, request, &mut req) };
    let err = std::io::Error::last_os_error();
    unsafe { libc::close(fd) };
    if rc != 0 {
        bail!("reading the {what} of {ifname}: {err}");
    }
    Ok(req)
}

/// The MAC address of an interface (SIOCGIFHWADDR).
pub fn mac_of(ifname: &str) -> anyhow::Result<[u8; 6]> {
    let req = ifreq_ioctl(ifname, libc::SIOCGIFHWADDR, "MAC address")?;
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (i, m) in mac.iter_mut().enumerate() {
        *m = sa.sa_data[i] as u8;
    }
    Ok(mac)
}

/// The MTU of an interface (SIOCGIFMTU).
pub fn mtu_of(ifname: &str) -> anyhow::Result<u16> {
    let req = ifreq_ioctl(ifname, libc::SIOCGIFMTU, "MTU")?;
    Ok(unsafe { req.ifr_ifru.ifru_mtu }.clamp(0, 65535) as u16)
}
