//! Queueing disciplines, asked of the kernel over rtnetlink (an RTM_GETQDISC dump, what
//! `tc qdisc show` asks): before TCX (6.6) a TC program needs a `clsact` qdisc on its interface.
use netlink_packet_route::{
    RouteNetlinkMessage,
    tc::{TcAttribute, TcMessage},
};

use super::netlink::{NetlinkError, request};

/// The kinds (`clsact`, `noqueue`, `fq_codel`, …) of the qdiscs on interface `ifindex` in this
/// thread's network namespace.
pub fn kinds(ifindex: u32) -> Result<Vec<String>, NetlinkError> {
    let answer = request(
        RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()),
        true,
    )?;
    Ok(answer
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewQueueDiscipline(q) if q.header.index == ifindex as i32 => {
                q.attributes.iter().find_map(|a| match a {
                    TcAttribute::Kind(k) => Some(k.clone()),
                    _ => None,
                })
            }
            _ => None,
        })
        .collect())
}

/// Whether interface `ifindex` has a `clsact` qdisc.
pub fn has_clsact(ifindex: u32) -> Result<bool, NetlinkError> {
    Ok(kinds(ifindex)?.iter().any(|k| k == "clsact"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::testns::{in_private_netns, index_of, sh};

    #[test]
    fn clsact_is_seen_once_added_and_only_on_its_interface() {
        in_private_netns(|| {
            sh(&[
                "ip", "link", "add", "q0", "type", "veth", "peer", "name", "q1",
            ]);
            let (q0, q1) = (index_of("q0"), index_of("q1"));
            assert!(!has_clsact(q0).unwrap());
            sh(&["tc", "qdisc", "add", "dev", "q0", "clsact"]);
            assert!(has_clsact(q0).unwrap());
            assert!(!has_clsact(q1).unwrap());
            sh(&["ip", "link", "set", "q1", "up"]);
            let kinds = kinds(q1).unwrap();
            assert!(!kinds.iter().any(|k| k == "clsact"), "{kinds:?}");
        });
    }
}
