//! The machine: interfaces, addresses and kernel settings, asked of the kernel directly (ioctls,
//! netlink, /proc/sys) with errors that say what to do. The bottom layer: it imports nothing else
//! of anypop.
pub mod addr;
pub mod ethtool;
pub mod iface;
pub mod kernel;
pub mod netlink;
pub mod paths;
pub mod privileges;
pub mod qdisc;
pub mod route;
pub mod rundir;
pub mod testns;
