//! Load, pin, attach the kernel programs and fill their maps.
pub mod backend;
pub mod baseline;
pub mod counters;
pub mod edge;
pub mod links;
pub(crate) mod maps;
pub mod testrun;
pub mod trafficgen;

use std::path::{Path, PathBuf};

use anypop_common::layout::LAYOUT_VERSION;

/// Everything that can go wrong between the kernel and us, phrased for the operator.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(
        "the eBPF programs were not built into this binary (built with AYA_BUILD_SKIP?); rebuild with `cargo build` after running scripts/setup.sh"
    )]
    NotBuilt,
    #[error(
        "cannot create pin directory {path}: {source}; is bpffs mounted at /sys/fs/bpf (`mount -t bpf bpf /sys/fs/bpf`) and are you root?"
    )]
    PinDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "loading the eBPF object failed: {0}\nanypop needs root (or CAP_BPF + CAP_NET_ADMIN) and a kernel with BTF (5.17 or newer: the edge uses bpf_loop)"
    )]
    Load(String),
    #[error(
        "the kernel's verifier rejected the program (this is a bug in anypop; please report it with this log):\n{0}"
    )]
    Verifier(String),
    #[error("map access failed: {0}")]
    Map(String),
    #[error(
        "interface {ifname}: the driver cannot run XDP natively ({detail}).\nFix: use a NIC/driver with native XDP, or set xdp_mode = \"auto\" for this node to fall back to generic mode (much slower)"
    )]
    NoNativeXdp { ifname: String, detail: String },
    #[error(
        "interface {ifname}: attaching XDP failed ({detail}); check that the interface exists (`ip link`) and has no other XDP program"
    )]
    Attach { ifname: String, detail: String },
    #[error("test run failed: {0}")]
    TestRun(String),
    #[error(transparent)]
    Image(#[from] crate::compile::ImageError),
}

/// Root of all of anypop's pins: one directory per node, with the layout version in the path so a
/// daemon of an incompatible layout never touches these maps.
pub fn pin_root() -> PathBuf {
    PathBuf::from(format!("/sys/fs/bpf/anypop/v{LAYOUT_VERSION}"))
}

/// The pin directory of a node.
pub fn node_pin_dir(root: &Path, node: &str) -> PathBuf {
    root.join(node)
}
