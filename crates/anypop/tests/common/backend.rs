//! The backend's lab and harness for its golden tests: a private network namespace where the
//! backend's `a0` has 192.0.2.21/24 and players are reached through a gateway, the real `decap`
//! and `dsr` programs loaded with pins removed afterwards, and one-case runners.
#![allow(dead_code)]

use std::path::PathBuf;

use anypop::{
    compile, config,
    dataplane::{
        backend::BackendPlane,
        testrun::{run_tc, run_xdp},
    },
    telemetry::Snapshot,
};
use anypop_common::verdict::Reason;

use super::*;

/// The backend tests' network (`fixtures/backend.toml`).
pub const NETWORK: &str = BACKEND_TOML;

pub const POP: [u8; 4] = [198, 51, 100, 1];
pub const ME: [u8; 4] = [192, 0, 2, 21];
pub const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const TC_ACT_OK: i32 = 0;

pub struct TestBackend {
    pub plane: Option<BackendPlane>,
    pub pins: PathBuf,
    pub a0: u32,
    pub a0_mac: [u8; 6],
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.plane.take();
        let _ = std::fs::remove_dir_all(&self.pins);
    }
}

impl TestBackend {
    pub fn plane(&mut self) -> &mut BackendPlane {
        self.plane.as_mut().unwrap()
    }

    pub fn snapshot(&mut self) -> Snapshot {
        self.plane().snapshot().unwrap()
    }

    /// One XDP case: action, counter, output.
    pub fn decap_case(
        &mut self,
        what: &str,
        frame: &[u8],
        action: u32,
        reason: Reason,
        out: Option<&[u8]>,
    ) {
        self.one_case(what, frame, action, reason, out, |t| {
            let a0 = t.a0;
            let r = run_xdp(t.plane().decap(), frame, Some(a0), 1).unwrap();
            (r.action, r.output)
        });
    }

    /// One TC case: action, counter, output.
    pub fn dsr_case(
        &mut self,
        what: &str,
        frame: &[u8],
        action: i32,
        reason: Reason,
        out: Option<&[u8]>,
    ) {
        self.one_case(what, frame, action, reason, out, |t| {
            let a0 = t.a0;
            let r = run_tc(t.plane().dsr(), frame, a0).unwrap();
            (r.action, r.output)
        });
    }

    /// Runs `run` (which gives the action and output of `frame`) and checks the action, that
    /// exactly one `reason` was counted, and the output (`None`: the frame as it came).
    fn one_case<A: PartialEq + std::fmt::Debug>(
        &mut self,
        what: &str,
        frame: &[u8],
        action: A,
        reason: Reason,
        out: Option<&[u8]>,
        run: impl FnOnce(&mut Self) -> (A, Vec<u8>),
    ) {
        let before = self.snapshot();
        let (got, output) = run(self);
        let after = self.snapshot();
        assert_eq!(got, action, "{what}: action");
        assert_one_counted(what, &before, &after, reason);
        assert_eq!(output, out.unwrap_or(frame), "{what}: output");
        produced(reason);
    }
}

/// `frame` as `dsr` sends it: addressed to `dst` (the next hop) from `src` (our interface).
pub fn with_macs(frame: &[u8], dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut v = frame.to_vec();
    v[..6].copy_from_slice(&dst);
    v[6..12].copy_from_slice(&src);
    v
}

/// The gateway's (192.0.2.1's) MAC, as a permanent neighbour entry on a0.
pub fn set_gateway_mac(mac: &str) {
    NetSetup::new()
        .neigh("192.0.2.1", mac, "a0")
        .apply()
        .unwrap();
}

/// A private namespace where the backend's a0 has 192.0.2.21/24 and players are reached through
/// the gateway 192.0.2.1 (MAC 02:00:00:00:00:01).
pub fn with_backend(f: impl FnOnce(&mut TestBackend) + Send + 'static) {
    with_backend_net(NETWORK.to_string(), f)
}

pub fn with_backend_net(network: String, f: impl FnOnce(&mut TestBackend) + Send + 'static) {
    in_thread(move || {
        require_root();
        NetSetup::enter_private()
            .lo_up()
            .veth_mac("a0", "02:00:00:00:0a:00", "a1")
            .addr("192.0.2.21/24", "a0")
            .addr("203.0.113.10/32", "lo")
            .route("100.64.0.0/10", "192.0.2.1")
            .apply()
            .unwrap();
        set_gateway_mac("02:00:00:00:00:01");
        // bpf_fib_lookup answers only for interfaces with forwarding on (also in output mode).
        NetSetup::new().forwarding(&["all", "a0"]).apply().unwrap();
        let pins = PathBuf::from(
            format!(
                "/sys/fs/bpf/anypop-betest-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            )
            .replace(['(', ')'], ""),
        );
        let net = config::parse(&network, "test.toml", std::path::Path::new(".")).unwrap();
        let tables = compile::compile_backend(&net, "be-1").unwrap();
        let mut plane = BackendPlane::load(&pins).unwrap();
        plane.apply(&tables).unwrap();
        let mut t = TestBackend {
            plane: Some(plane),
            pins,
            a0: anypop::sys::iface::ifindex("a0", "test").unwrap(),
            a0_mac: anypop::sys::iface::mac_of("a0").unwrap(),
        };
        f(&mut t);
    })
}

/// `inner` (an Ethernet frame) in IPIP from `src` to `dst`, as a POP one hop away sends it (TTL
/// 63).
pub fn ipip(inner: &[u8], src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    anypop::lab::frames::ipip(inner, src, dst, 63)
}

/// The same network with be-1 in tunnel-compatible mode (a kernel IPIP tunnel decapsulates).
pub fn tunnel_network() -> String {
    NETWORK.replace(
        "address = \"192.0.2.21\"",
        "address = \"192.0.2.21\"\nmode = \"tunnel\"",
    )
}

/// The reply as the kernel tunnel emits it: outer IPv4 (backend → POP, protocol 4) around the
/// game server's packet, whose source is the tunnel's own address.
pub fn tunnelled_reply(inner: &[u8]) -> Vec<u8> {
    ipip(inner, ME, POP)
}
