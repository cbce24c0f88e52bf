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
        "loading the eBPF object failed (anypop needs root, or CAP_BPF + CAP_NET_ADMIN, and a kernel with BTF, 5.17 or newer: the edge uses bpf_loop)"
    )]
    Load(#[source] aya::EbpfError),
    #[error(
        "program `{program}` is missing from the eBPF object built into anypop; rebuild anypop (`cargo build`)"
    )]
    ProgramMissing { program: String },
    #[error("program `{program}` in the eBPF object is not of the kind anypop attaches")]
    ProgramKind {
        program: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    /// The verifier's log is what a bug report needs: it says which instruction it refused and
    /// why, so it is kept whole and shown last, after the program's name.
    #[error(
        "the kernel's verifier rejected the program `{program}` (this is a bug in anypop; please report it with this log):\n{log}\nBPF_PROG_LOAD failed"
    )]
    Verifier {
        program: String,
        log: String,
        #[source]
        source: std::io::Error,
    },
    #[error("loading the program `{program}` into the kernel failed")]
    ProgramLoad {
        program: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map {map} is missing from the loaded program")]
    MapMissing { map: String },
    #[error("map {map} is not {expected}")]
    MapKind { map: String, expected: &'static str },
    #[error("map access failed: {map}")]
    Map {
        map: String,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("map access failed: {map}")]
    XdpMap {
        map: String,
        #[source]
        source: aya::maps::xdp::XdpMapError,
    },
    #[error("map access failed: mmap {map}")]
    Mmap {
        map: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tables were compiled for slot {compiled}, but the standby slot is {standby}")]
    WrongSlot { compiled: u8, standby: u8 },
    #[error("{what} failed")]
    Program {
        what: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("turning on the kernel's BPF run-time statistics (BPF_ENABLE_STATS)")]
    Stats(#[source] aya::sys::SyscallError),
    #[error("reading the link info of the pinned attachment {}", path.display())]
    LinkInfo {
        path: PathBuf,
        #[source]
        source: aya::programs::links::LinkError,
    },
    #[error("pinning the attachment at {}", path.display())]
    PinLink {
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("reading {path} (the CPUs the program may run on)")]
    PossibleCpus {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "interface {ifname}: the driver cannot run XDP natively (fix: use a NIC/driver with native XDP, or set xdp_mode = \"auto\" for this node to fall back to generic mode, much slower)"
    )]
    NoNativeXdp {
        ifname: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error(
        "interface {ifname}: attaching XDP failed ({detail}); check that the interface exists (`ip link`) and has no other XDP program"
    )]
    Attach { ifname: String, detail: String },
    /// A step of attaching or adopting that failed on a kernel call: `what` says the step (and
    /// what to do), the source keeps the call and its errno.
    #[error("interface {ifname}: {what}")]
    AttachStep {
        ifname: String,
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("test run failed")]
    TestRun(#[source] aya::programs::ProgramError),
    #[error("test run failed: BPF_PROG_TEST_RUN on fd {fd}")]
    TestRunFd {
        fd: i32,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Image(#[from] crate::compile::ImageError),
}

/// A program kind anypop loads by name ([`load_program`]): aya gives each its own `load`.
pub(crate) trait Loadable {
    fn load_into_kernel(&mut self) -> Result<(), aya::programs::ProgramError>;
}

impl Loadable for aya::programs::Xdp {
    fn load_into_kernel(&mut self) -> Result<(), aya::programs::ProgramError> {
        self.load()
    }
}

impl Loadable for aya::programs::SchedClassifier {
    fn load_into_kernel(&mut self) -> Result<(), aya::programs::ProgramError> {
        self.load()
    }
}

/// Loads the program `program` of `ebpf`, a `T`, into the kernel: a program the object lacks, of
/// another kind, or refused by the verifier each fails with its own variant, the verifier's log
/// kept for the operator.
pub(crate) fn load_program<T: Loadable>(
    ebpf: &mut aya::Ebpf,
    program: &str,
) -> Result<(), DataplaneError>
where
    for<'a> &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let p: &mut T = ebpf
        .program_mut(program)
        .ok_or_else(|| DataplaneError::ProgramMissing {
            program: program.to_owned(),
        })?
        .try_into()
        .map_err(|source| DataplaneError::ProgramKind {
            program: program.to_owned(),
            source,
        })?;
    p.load_into_kernel().map_err(|e| match e {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => DataplaneError::Verifier {
            program: program.to_owned(),
            log: verifier_log.to_string(),
            source: io_error,
        },
        source => DataplaneError::ProgramLoad {
            program: program.to_owned(),
            source,
        },
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A program is found by name and loaded as the kind asked for; anything else is its own
    /// error, naming the program (loads real programs: needs root).
    #[test]
    fn programs_load_by_name_and_kind() {
        let mut ebpf = aya::Ebpf::load(baseline::BASELINE_OBJ).unwrap();
        let e = load_program::<aya::programs::Xdp>(&mut ebpf, "nosuch").unwrap_err();
        assert!(
            matches!(&e, DataplaneError::ProgramMissing { program } if program == "nosuch"),
            "{e:?}"
        );
        let e = load_program::<aya::programs::Xdp>(&mut ebpf, "base_tc").unwrap_err();
        assert!(matches!(e, DataplaneError::ProgramKind { .. }), "{e:?}");
        load_program::<aya::programs::Xdp>(&mut ebpf, "base_pass").unwrap();
        load_program::<aya::programs::SchedClassifier>(&mut ebpf, "base_tc").unwrap();
    }

    #[test]
    fn map_errors_keep_the_map_the_call_and_the_errno() {
        let e = DataplaneError::Map {
            map: "SRC_V4".into(),
            source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_update_elem",
                io_error: std::io::Error::from_raw_os_error(libc::E2BIG),
            }),
        };
        let chain = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(
            chain,
            "map access failed: SRC_V4: `bpf_map_update_elem` failed: Argument list too long (os error 7)"
        );
    }
}
