//! Verdict reasons: every packet a program sees ends with exactly one of these.
//!
//! The numeric values are stable (they index the per-CPU counter arrays that survive program
//! upgrades), so new reasons are only ever appended.

/// Why a packet ended the way it did.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Not IPv4/IPv6 (ARP, LLDP, …): handed to the kernel untouched.
    PassNotIp = 0,
    /// IP traffic not addressed to a VIP (the POP's own SSH, BGP, …): handed to the kernel.
    PassNotVip = 1,
    /// Truncated or inconsistent headers.
    DropMalformed = 2,
    /// A non-first IPv4 fragment or an IPv6 fragment, with the fragment policy `drop`.
    DropFragment = 3,
    /// A fragment, with the fragment policy `pass` (the kernel reassembles). Backend: an outer
    /// IPv4 fragment of IPIP from a known POP, never decapsulated; the kernel reassembles it.
    PassFragment = 4,
    /// Addressed to a VIP, but no service matches protocol and port.
    DropNoService = 5,
    /// A `deny` rule matched.
    DropRule = 6,
    /// The source exceeded its token bucket.
    DropRateLimit = 7,
    /// The source is serving a block time after exceeding its bucket.
    DropBlocked = 8,
    /// Too many new sources this second (random-source flood guard).
    DropSourceCap = 9,
    /// The encapsulated packet would exceed the egress MTU (XDP cannot fragment) and may be
    /// fragmented by its sender (no DF), or cannot be answered (IP options, an ICMP error).
    DropMtu = 10,
    /// The service has no backend with a weight above zero and no existing flow.
    DropNoBackend = 11,
    /// `bpf_fib_lookup` found no route to the backend, or the egress is not ours.
    DropNoRoute = 12,
    /// Encapsulated in IPIP and sent to the backend from XDP.
    FwdIpip = 13,
    /// Encapsulated in IPIP and handed to the kernel, which resolves the next hop's MAC first.
    FwdIpipKernel = 14,
    /// An IPv6 service packet that passed filtering; handed to the kernel (IPv6 forwarding later).
    PassV6Service = 15,
    /// Tail room / head room adjustment failed (should not happen on a sane driver).
    DropAdjustFailed = 16,
    /// Backend: an IPIP packet from a known POP to us, for a configured service: decapsulated
    /// and passed to the stack.
    DecapIpip = 17,
    /// Backend: not for us (not IPIP, not to our address, or not for a service): untouched.
    PassNotOurs = 18,
    /// Backend: IPIP to us from a source that is not a known POP (no open relay).
    DropUnknownPop = 19,
    /// Backend: a service reply sent straight to the player with the FIB's next hop.
    DsrRewrite = 20,
    /// Backend: a service reply for which the FIB had no answer; left to the kernel.
    DsrFibFail = 21,
    /// Backend, tunnel mode: an IPIP packet for a service left for the kernel's tunnel, its flow
    /// remembered for the reply.
    PassTunnel = 22,
    /// Backend, tunnel mode: a reply caught in the tunnel, outer header stripped, source set to
    /// the VIP the player addressed, sent straight to the player.
    DsrTunnel = 23,
    /// As `DropMtu`, for a DF packet: answered with ICMP "fragmentation needed" (the MTU left
    /// inside the tunnel), so the player's path-MTU discovery sends smaller packets.
    DropMtuIcmp = 24,
}

/// Number of counter slots reserved for reasons (room for the backend and later programs).
pub const REASON_SLOTS: u32 = 32;

impl Reason {
    /// Every reason, in numeric order.
    pub const ALL: [Reason; 25] = [
        Reason::PassNotIp,
        Reason::PassNotVip,
        Reason::DropMalformed,
        Reason::DropFragment,
        Reason::PassFragment,
        Reason::DropNoService,
        Reason::DropRule,
        Reason::DropRateLimit,
        Reason::DropBlocked,
        Reason::DropSourceCap,
        Reason::DropMtu,
        Reason::DropNoBackend,
        Reason::DropNoRoute,
        Reason::FwdIpip,
        Reason::FwdIpipKernel,
        Reason::PassV6Service,
        Reason::DropAdjustFailed,
        Reason::DecapIpip,
        Reason::PassNotOurs,
        Reason::DropUnknownPop,
        Reason::DsrRewrite,
        Reason::DsrFibFail,
        Reason::PassTunnel,
        Reason::DsrTunnel,
        Reason::DropMtuIcmp,
    ];

    /// The stable snake_case name used in logs, metrics and captures.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::PassNotIp => "pass_not_ip",
            Reason::PassNotVip => "pass_not_vip",
            Reason::DropMalformed => "drop_malformed",
            Reason::DropFragment => "drop_fragment",
            Reason::PassFragment => "pass_fragment",
            Reason::DropNoService => "drop_no_service",
            Reason::DropRule => "drop_rule",
            Reason::DropRateLimit => "drop_rate_limit",
            Reason::DropBlocked => "drop_blocked",
            Reason::DropSourceCap => "drop_source_cap",
            Reason::DropMtu => "drop_mtu",
            Reason::DropNoBackend => "drop_no_backend",
            Reason::DropNoRoute => "drop_no_route",
            Reason::FwdIpip => "fwd_ipip",
            Reason::FwdIpipKernel => "fwd_ipip_kernel",
            Reason::PassV6Service => "pass_v6_service",
            Reason::DropAdjustFailed => "drop_adjust_failed",
            Reason::DecapIpip => "decap_ipip",
            Reason::PassNotOurs => "pass_not_ours",
            Reason::DropUnknownPop => "drop_unknown_pop",
            Reason::DsrRewrite => "dsr_rewrite",
            Reason::DsrFibFail => "dsr_fib_fail",
            Reason::PassTunnel => "pass_tunnel",
            Reason::DsrTunnel => "dsr_tunnel",
            Reason::DropMtuIcmp => "drop_mtu_icmp",
        }
    }

    /// Looks a reason up by its numeric value.
    pub fn from_u32(v: u32) -> Option<Reason> {
        Reason::ALL.get(v as usize).copied()
    }

    /// Looks a reason up by its name.
    pub fn from_name(name: &str) -> Option<Reason> {
        Reason::ALL.iter().copied().find(|r| r.name() == name)
    }

    /// True for reasons that drop the packet.
    pub const fn is_drop(self) -> bool {
        matches!(
            self,
            Reason::DropMalformed
                | Reason::DropFragment
                | Reason::DropNoService
                | Reason::DropRule
                | Reason::DropRateLimit
                | Reason::DropBlocked
                | Reason::DropSourceCap
                | Reason::DropMtu
                | Reason::DropMtuIcmp
                | Reason::DropNoBackend
                | Reason::DropNoRoute
                | Reason::DropAdjustFailed
                | Reason::DropUnknownPop
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_dense_and_names_unique() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?} out of order");
            assert_eq!(Reason::from_name(r.name()), Some(*r));
            assert_eq!(Reason::from_u32(i as u32), Some(*r));
        }
        assert!(Reason::ALL.len() as u32 <= REASON_SLOTS);
    }
}
