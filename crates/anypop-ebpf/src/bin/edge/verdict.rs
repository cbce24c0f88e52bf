//! What a packet's walk through the edge ends with: an action and the one reason it is
//! counted under.
use anypop_common::verdict::Reason;
use aya_ebpf::bindings::xdp_action;

/// See [`verdict`], [`drop`], [`pass`] and [`too_big`].
pub struct Verdict {
    pub action: u32,
    pub reason: Reason,
    /// Non-zero: the packet is too big to tunnel for an egress of this MTU; [`crate::edge`] hands
    /// it to [`crate::icmp::edge_too_big`], which counts it and decides whether it is answered.
    pub too_big_for: u32,
}

#[inline(always)]
pub const fn verdict(action: u32, reason: Reason) -> Verdict {
    Verdict {
        action,
        reason,
        too_big_for: 0,
    }
}

/// Too big to tunnel through an egress of MTU `mtu`: `drop_mtu`, unless [`crate::edge`]
/// answers it.
#[inline(always)]
pub const fn too_big(mtu: u32) -> Verdict {
    Verdict {
        action: xdp_action::XDP_DROP,
        reason: Reason::DropMtu,
        too_big_for: mtu,
    }
}

#[inline(always)]
pub const fn drop(reason: Reason) -> Verdict {
    verdict(xdp_action::XDP_DROP, reason)
}

#[inline(always)]
pub const fn pass(reason: Reason) -> Verdict {
    verdict(xdp_action::XDP_PASS, reason)
}
