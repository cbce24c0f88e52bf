//! BPF_PROG_TEST_RUN of an XDP program on one frame: the golden-packet tests, the benchmarks and
//! (later) `anypop trace` all run the real program this way.
use aya::programs::{TestRun, TestRunOptions, Xdp};

use super::DataplaneError;

/// XDP actions, as the kernel numbers them.
pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

impl XdpMd {
    /// The context of a `len`-byte frame arriving on `ifindex` (0: the kernel's default).
    pub(crate) fn for_frame(len: usize, ifindex: u32) -> XdpMd {
        XdpMd {
            data_end: len as u32,
            ingress_ifindex: ifindex,
            ..Default::default()
        }
    }

    /// Its bytes, as BPF_PROG_TEST_RUN takes them.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        // SAFETY: repr(C), six u32 fields, no padding.
        unsafe {
            std::slice::from_raw_parts(
                self as *const XdpMd as *const u8,
                std::mem::size_of::<XdpMd>(),
            )
        }
    }
}

/// What one run returned.
#[derive(Clone, Debug)]
pub struct XdpRun {
    pub action: u32,
    /// The frame as the program left it.
    pub output: Vec<u8>,
    /// Mean ns per run as the kernel measured it.
    pub ns_per_run: u64,
}

/// The `xdp_md` context passed in: which interface the frame "arrived" on matters for the FIB
/// lookup and for XDP_TX (and, in live-frames mode, is where frames are sent).
#[repr(C)]
#[derive(Default, Clone, Copy)]
pub(crate) struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

/// Runs `prog` on `frame` `repeat` times (state-changing effects such as rate-limit buckets apply
/// once per repeat). `ingress_ifindex` must name an interface in the calling thread's network
/// namespace, or be `None` (then the kernel uses loopback).
pub fn run_xdp(
    prog: &Xdp,
    frame: &[u8],
    ingress_ifindex: Option<u32>,
    repeat: u32,
) -> Result<XdpRun, DataplaneError> {
    let mut out = vec![0u8; frame.len() + 256];
    let ctx = XdpMd::for_frame(frame.len(), ingress_ifindex.unwrap_or(0));
    let ctx_bytes = ctx.as_bytes();
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ctx_in: if ingress_ifindex.is_some() {
            Some(ctx_bytes)
        } else {
            None
        },
        repeat: repeat.max(1),
        ..Default::default()
    };
    let r = prog.test_run(opts).map_err(DataplaneError::TestRun)?;
    out.truncate(r.data_size_out as usize);
    Ok(XdpRun {
        action: r.return_value,
        output: out,
        ns_per_run: r.duration.as_nanos() as u64,
    })
}

/// BPF_PROG_TEST_RUN on any XDP program fd (for peers such as xdp-filter, whose programs we did
/// not load through aya). Returns (action, mean ns per run as measured by the kernel).
pub fn run_xdp_raw_fd(
    prog_fd: i32,
    frame: &[u8],
    ingress_ifindex: Option<u32>,
    repeat: u32,
) -> Result<(u32, u64), DataplaneError> {
    run_raw_fd(prog_fd, frame, ingress_ifindex, repeat, false)
}

/// BPF_PROG_TEST_RUN of a TC program fd, as if the frame left through `ifindex`.
pub fn run_tc_raw_fd(
    prog_fd: i32,
    frame: &[u8],
    ifindex: u32,
    repeat: u32,
) -> Result<(u32, u64), DataplaneError> {
    run_raw_fd(prog_fd, frame, Some(ifindex), repeat, true)
}

fn run_raw_fd(
    prog_fd: i32,
    frame: &[u8],
    ingress_ifindex: Option<u32>,
    repeat: u32,
    tc: bool,
) -> Result<(u32, u64), DataplaneError> {
    #[repr(C)]
    #[derive(Default)]
    struct TestAttr {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
        ctx_size_in: u32,
        ctx_size_out: u32,
        ctx_in: u64,
        ctx_out: u64,
        flags: u32,
        cpu: u32,
        batch_size: u32,
        _pad: u32,
    }
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    let ctx = XdpMd::for_frame(frame.len(), ingress_ifindex.unwrap_or(0));
    // The frame may be rewritten (encapsulation grows it): give the kernel room to write back.
    let mut out = vec![0u8; frame.len() + 256];
    let mut attr = TestAttr {
        prog_fd: prog_fd as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_size_out: out.len() as u32,
        data_out: out.as_mut_ptr() as u64,
        repeat: repeat.max(1),
        ..Default::default()
    };
    // struct __sk_buff (192 bytes) with only ifindex (offset 40) set, for TC programs.
    let skb = skb_ctx(ingress_ifindex.unwrap_or(0));
    if tc {
        attr.ctx_size_in = skb.len() as u32;
        attr.ctx_in = skb.as_ptr() as u64;
    } else if ingress_ifindex.is_some() {
        attr.ctx_size_in = std::mem::size_of::<XdpMd>() as u32;
        attr.ctx_in = &ctx as *const XdpMd as u64;
    }
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestAttr,
            std::mem::size_of::<TestAttr>() as u32,
        )
    };
    if rc != 0 {
        return Err(DataplaneError::TestRunFd {
            fd: prog_fd,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok((attr.retval, attr.duration as u64))
}

/// A `struct __sk_buff` context (192 bytes) for TC test runs: the kernel accepts only a few
/// fields set, `ifindex` (offset 40) among them, which makes the frame "leave" through it.
fn skb_ctx(ifindex: u32) -> [u8; 192] {
    let mut ctx = [0u8; 192];
    ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

/// What one TC test run returned.
#[derive(Clone, Debug)]
pub struct TcRun {
    /// TC action (`TC_ACT_OK` = 0, `TC_ACT_SHOT` = 2, `TC_ACT_REDIRECT` = 7).
    pub action: i32,
    pub output: Vec<u8>,
}

/// Runs a TC program on `frame` as if it were leaving through `ifindex` (in the calling
/// thread's network namespace).
pub fn run_tc(
    prog: &aya::programs::SchedClassifier,
    frame: &[u8],
    ifindex: u32,
) -> Result<TcRun, DataplaneError> {
    let ctx = skb_ctx(ifindex);
    let mut out = vec![0u8; frame.len() + 256];
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ctx_in: Some(&ctx),
        repeat: 1,
        ..Default::default()
    };
    let r = prog.test_run(opts).map_err(DataplaneError::TestRun)?;
    out.truncate(r.data_size_out as usize);
    Ok(TcRun {
        action: r.return_value as i32,
        output: out,
    })
}
