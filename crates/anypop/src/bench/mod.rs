//! `anypop bench`: ns per packet of the real programs through BPF_PROG_TEST_RUN, each path beside
//! its baselines measured in the same run on the same machine: an empty XDP program, a bare
//! XDP_DROP, and Debian's `xdp-filter` with an equivalent rule.
//!
//! Two methods, because XDP test runs do not reset the frame between repetitions:
//! - `repeat`: one syscall runs the program N times on the same frame; the kernel reports the
//!   mean. Exact for paths that leave the frame alone (drops, passes).
//! - `single`: N syscalls of one run each, mean of the kernel's per-run time. Includes the
//!   kernel's timer overhead (the empty program shows it), but is the only honest way to time the
//!   forward path, which rewrites the frame.
use std::os::fd::{AsFd, AsRawFd};

mod frames;
mod scale;
mod table;
mod testrun_rows;
pub mod throughput;

pub use scale::{ScaleApply, apply_at_scale};
pub use table::table;

/// One measured path.
#[derive(Clone, Debug)]
pub struct Row {
    pub program: String,
    pub path: String,
    /// A TC program (actions numbered differently from XDP's).
    pub tc: bool,
    pub action: u32,
    /// ns/packet by the `repeat` method (None where it cannot apply).
    pub repeat_ns: Option<f64>,
    /// ns/packet by the `single` method.
    pub single_ns: f64,
}

/// Removes a benchmark pin directory however the run ends.
struct PinGuard(std::path::PathBuf);

impl Drop for PinGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the whole benchmark and returns its rows; `prefix_counts` are the blocklist sizes for the
/// flatness check.
pub fn run(iterations: u32, repeat: u32, prefix_counts: &[usize]) -> anyhow::Result<Vec<Row>> {
    crate::lab::netns::remove_leftovers();
    let ns = testrun_rows::namespace()?;
    let xf = testrun_rows::xdp_filter_prog(&ns)?;
    let xf_fd = xf.as_fd().as_raw_fd();
    let counts = prefix_counts.to_vec();
    let rows = ns.run(move || testrun_rows::rows(xf_fd, &counts, iterations, repeat))??;
    drop(xf);
    Ok(rows)
}

/// The machine the figures were measured on.
pub fn machine_facts() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpu}, {cores} cores, kernel {}", kernel.trim())
}
