//! IPv4 addresses on an interface (the VIPs a backend puts on `lo`): presence is asked of the
//! kernel (`getifaddrs`, which answers for the calling thread's network namespace); changes are
//! made with `ip addr` and judged by its exit status alone, never by its text.
use std::net::Ipv4Addr;

use anyhow::{Context, bail};

/// True when `ifname` has `addr` (any prefix length) in this network namespace.
pub fn has_ipv4(ifname: &str, addr: Ipv4Addr) -> anyhow::Result<bool> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        bail!(
            "listing the addresses of this machine: {}",
            std::io::Error::last_os_error()
        );
    }
    let mut found = false;
    let mut cur = head;
    while !cur.is_null() {
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        if name.to_bytes() != ifname.as_bytes()
            || unsafe { (*ifa.ifa_addr).sa_family } as i32 != libc::AF_INET
        {
            continue;
        }
        let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
        if Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)) == addr {
            found = true;
            break;
        }
    }
    unsafe { libc::freeifaddrs(head) };
    Ok(found)
}

/// Whether `addr` is an address of this machine (of this network namespace), on any interface:
/// binding to it is exactly what the kernel allows only for local addresses.
pub fn is_local(addr: Ipv4Addr) -> bool {
    match std::net::UdpSocket::bind(std::net::SocketAddrV4::new(addr, 0)) {
        Ok(_) => true,
        Err(e) => e.raw_os_error() != Some(libc::EADDRNOTAVAIL),
    }
}

/// Adds `addr/32` to `ifname`.
pub fn add_ipv4_host(ifname: &str, addr: Ipv4Addr) -> anyhow::Result<()> {
    ip_addr("add", ifname, addr)
}

/// Removes `addr/32` from `ifname`; an address that is already gone is no error.
pub fn del_ipv4_host(ifname: &str, addr: Ipv4Addr) -> anyhow::Result<()> {
    if !has_ipv4(ifname, addr)? {
        return Ok(());
    }
    ip_addr("del", ifname, addr)
}

fn ip_addr(verb: &str, ifname: &str, addr: Ipv4Addr) -> anyhow::Result<()> {
    let out = std::process::Command::new("ip")
        .args(["addr", verb, &format!("{addr}/32"), "dev", ifname])
        .output()
        .context("running ip (is iproute2 installed?)")?;
    if !out.status.success() {
        bail!(
            "ip addr {verb} {addr}/32 dev {ifname} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
