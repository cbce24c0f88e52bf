//! veth's XDP_TX trap: a frame an XDP program sends back out of a veth with XDP_TX waits in the
//! peer's ring until the peer's next ordinary packet — unless the peer runs an XDP program too
//! (then the peer's NAPI polls its ring at once). Under a steady stream nobody notices; a lone
//! player's packet (or an ICMP answer) stalls for seconds. Seen in the lab and in a newcomer's
//! namespace set-up, so doctor says it.
use super::Check;
use crate::sys::netlink::Link;

/// What is known of a veth's peer.
#[derive(Debug, PartialEq, Eq)]
pub enum Peer {
    /// In this namespace: its name and whether it runs an XDP program.
    Here { name: String, has_xdp: bool },
    /// In another network namespace (its id as seen from here): out of sight.
    Elsewhere { netnsid: i32 },
}

/// The peer of `link` among `all` (this namespace's interfaces), if `link` is a veth.
pub fn peer_of(link: &Link, all: &[Link]) -> Option<Peer> {
    if !link.is_veth {
        return None;
    }
    if let Some(netnsid) = link.peer_netnsid {
        return Some(Peer::Elsewhere { netnsid });
    }
    let p = all.iter().find(|l| Some(l.index) == link.peer)?;
    Some(Peer::Here {
        name: p.name.clone(),
        has_xdp: p.xdp.is_some(),
    })
}

/// The verdict on a veth's peer (pure: facts in, check out).
pub fn veth_peer_check(ifname: &str, peer: &Peer) -> Check {
    match peer {
        Peer::Here {
            name,
            has_xdp: true,
        } => Check::ok(format!(
            "veth peer {name} of {ifname} runs an XDP program: frames sent back with XDP_TX leave at once"
        )),
        Peer::Here {
            name,
            has_xdp: false,
        } => Check::warn(
            format!(
                "veth peer {name} of {ifname} runs no XDP program: frames anypop sends back out of {ifname} with XDP_TX (forwards out the same interface, ICMP answers) wait in {name}'s ring until its next ordinary packet — seconds for a lone player"
            ),
            format!(
                "attach any XDP program to {name}, even one that passes everything: xdp-filter load {name}"
            ),
        ),
        Peer::Elsewhere { netnsid } => Check::ok(format!(
            "veth {ifname}: its peer is in another network namespace (id {netnsid}); it must run an XDP program there too, or frames sent back with XDP_TX wait in its ring (xdp-filter load PEER)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, peer: Option<u32>, xdp: bool) -> Link {
        Link {
            index,
            name: name.into(),
            is_veth: true,
            peer,
            peer_netnsid: None,
            xdp: xdp.then_some((crate::sys::netlink::XdpAttach::Native, 7)),
        }
    }

    #[test]
    fn a_peer_without_xdp_is_a_warning_with_a_runnable_fix() {
        let all = [link(3, "t0", Some(4), true), link(4, "t1", Some(3), false)];
        let peer = peer_of(&all[0], &all).unwrap();
        assert_eq!(
            peer,
            Peer::Here {
                name: "t1".into(),
                has_xdp: false
            }
        );
        let c = veth_peer_check("t0", &peer);
        assert_eq!(c.verdict, super::super::Verdict::Warn);
        assert_eq!(
            c.fix.as_deref(),
            Some(
                "attach any XDP program to t1, even one that passes everything: xdp-filter load t1"
            )
        );
        let all = [link(3, "t0", Some(4), true), link(4, "t1", Some(3), true)];
        let c = veth_peer_check("t0", &peer_of(&all[0], &all).unwrap());
        assert_eq!(c.verdict, super::super::Verdict::Ok);
        let mut other = link(3, "t0", Some(9), true);
        other.peer_netnsid = Some(2);
        assert_eq!(peer_of(&other, &[]), Some(Peer::Elsewhere { netnsid: 2 }));
        let mut not_veth = link(1, "lo", None, false);
        not_veth.is_veth = false;
        assert_eq!(peer_of(&not_veth, &[]), None);
    }
}
