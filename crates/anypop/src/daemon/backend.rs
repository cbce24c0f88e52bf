//! A backend node: `decap` and `dsr` attached to its interface, the VIPs on `lo` for the game
//! servers to bind.
use std::{net::Ipv4Addr, path::Path};

use anyhow::anyhow;

use super::explain_other_layouts;
use crate::sys::rundir::VipRecord;
use crate::{
    config::{Network, Role},
    dataplane::{edge::AttachMode, node_pin_dir},
    sys::addr::{add_ipv4_host, del_ipv4_host, has_ipv4},
    sys::iface::ifindex,
    telemetry::Snapshot,
};

/// A running backend: `decap` and `dsr` attached to its interface, its VIPs on `lo`.
pub struct BackendNode {
    pub plane: crate::dataplane::backend::BackendPlane,
    pub node: String,
    pub mode: AttachMode,
    ifname: String,
    allow_generic: bool,
    /// VIPs anypop added to `lo` for this node, recorded on disk so that a later stop or
    /// `anypop down` removes them even after a crash of this process.
    vips: VipRecord,
}

impl BackendNode {
    /// Loads and attaches the backend programs for `node`, and makes sure game servers can bind
    /// the VIPs (each is added to `lo` as a /32 unless already there).
    pub fn start_with(net: &Network, node: &str, pin_root: &Path) -> anyhow::Result<BackendNode> {
        let n = net.node(node)?;
        let tables = crate::compile::compile_backend(net, node)?;
        let ifname = n.interfaces.first().cloned().unwrap_or_default();
        ifindex(&ifname, node)?;
        let fwd = std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{ifname}/forwarding"))
            .unwrap_or_default();
        if fwd.trim() != "1" {
            tracing::warn!(
                "IPv4 forwarding is off on {ifname}: the DSR program cannot ask the FIB for next hops, replies take the kernel's route (counted as dsr_fib_fail). Fix: sysctl -w net.ipv4.conf.{ifname}.forwarding=1"
            );
        }
        let pin_dir = node_pin_dir(pin_root, node);
        let mut plane = crate::dataplane::backend::BackendPlane::load(&pin_dir)?;
        plane.apply(&tables)?;
        let allow_generic = n.xdp_mode_auto(&net.defaults);
        let mut be = BackendNode {
            plane,
            node: node.to_owned(),
            mode: AttachMode::Native,
            ifname: ifname.clone(),
            allow_generic,
            vips: VipRecord::of(&pin_dir),
        };
        be.sync_vips(&tables.vips)?;
        be.mode = be
            .plane
            .attach(&ifname, allow_generic)
            .map_err(|e| explain_other_layouts(e.into(), pin_root, node))?;
        tracing::info!(
            "interface {ifname}: decap attached ({} XDP), dsr on TC egress",
            be.mode
        );
        Ok(be)
    }

    /// Puts every VIP of `wanted` on `lo` (recording those anypop adds) and removes the VIPs
    /// anypop added earlier that are no longer served. A VIP that was there before anypop (the
    /// operator's) is never recorded, so never removed.
    fn sync_vips(&mut self, wanted: &[Ipv4Addr]) -> anyhow::Result<()> {
        for vip in wanted {
            if has_ipv4("lo", *vip)? {
                continue;
            }
            add_ipv4_host("lo", *vip).map_err(|e| {
                anyhow!(
                    "cannot add VIP {vip} to lo: {e:#}; add it by hand: ip addr add {vip}/32 dev lo"
                )
            })?;
            self.vips.add(*vip)?;
            tracing::info!("VIP {vip} added to lo: game servers can bind it");
        }
        for vip in self.vips.read() {
            if !wanted.contains(&vip) {
                del_ipv4_host("lo", vip)?;
                self.vips.forget(vip)?;
                tracing::info!("VIP {vip} removed from lo: no longer served here");
            }
        }
        Ok(())
    }

    pub fn snapshot(&mut self) -> anyhow::Result<Snapshot> {
        Ok(self.plane.snapshot()?)
    }

    /// Applies a new version of the network file (services, allowed POPs). VIPs newly served are
    /// added to `lo`, VIPs anypop added that are served no more are removed; a failure leaves the
    /// running tables as they were.
    pub fn apply(&mut self, net: &Network) -> anyhow::Result<()> {
        let tables = crate::compile::compile_backend(net, &self.node)?;
        self.plane.apply(&tables)?;
        self.sync_vips(&tables.vips)
    }

    /// What in `net` differs from the running node in ways only a restart makes live.
    pub fn restart_needed(&self, net: &Network) -> Vec<String> {
        let Ok(n) = net.node(&self.node) else {
            return vec![format!("node {} is no longer in the file", self.node)];
        };
        let mut out = Vec::new();
        if n.role != Role::Backend {
            out.push(format!("node {} is no longer a backend (role)", self.node));
            return out;
        }
        let wanted = n.interfaces.first().cloned().unwrap_or_default();
        if wanted != self.ifname {
            out.push(format!(
                "interface: running on {}, the file says {wanted}",
                self.ifname
            ));
        }
        if n.xdp_mode_auto(&net.defaults) != self.allow_generic {
            out.push("xdp_mode".to_string());
        }
        out
    }

    /// Stops the daemon. `leave_running`: the data plane and the VIPs on `lo` stay for the game
    /// servers (the attachments are pinned since they exist); otherwise detach and remove the
    /// VIPs anypop added.
    pub fn stop(self, leave_running: bool) -> anyhow::Result<()> {
        let BackendNode {
            mut plane,
            node,
            vips,
            ..
        } = self;
        if leave_running {
            for p in plane.link_pins() {
                tracing::info!("left running: link pinned at {}", p.display());
            }
            return Ok(());
        }
        plane.detach_all();
        drop(plane);
        remove_recorded_vips(&vips);
        tracing::info!("node {node}: backend programs detached");
        Ok(())
    }
}

/// Removes from `lo` every VIP in `record`, then the record (used by a detaching stop and by
/// `anypop down`). A VIP that cannot be removed stays in the record, with a warning.
pub fn remove_recorded_vips(record: &VipRecord) -> Vec<Ipv4Addr> {
    let mut removed = Vec::new();
    for vip in record.read() {
        match del_ipv4_host("lo", vip) {
            Ok(()) => {
                let _ = record.forget(vip);
                removed.push(vip);
            }
            Err(e) => tracing::warn!("{e:#}; remove it by hand: ip addr del {vip}/32 dev lo"),
        }
    }
    removed
}
