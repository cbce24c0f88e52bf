//! Interfaces as the kernel describes them over rtnetlink (RTM_GETLINK): name, kind, the veth
//! peer and the XDP program attached — asked of the calling thread's network namespace, never
//! read from a command's text.
use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage, LinkXdp, XdpAttached},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// How an XDP program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAttach {
    Native,
    Generic,
    Offload,
    /// Several programs at once (driver and generic, say).
    Multiple,
}

/// One interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub is_veth: bool,
    /// The interface this one is linked to (a veth's peer), by index.
    pub peer: Option<u32>,
    /// Set when that peer lives in another network namespace (its id as seen from here).
    pub peer_netnsid: Option<i32>,
    /// The XDP program on the interface: how it is attached and its id.
    pub xdp: Option<(XdpAttach, u32)>,
}

/// Every interface of this thread's network namespace.
pub fn links() -> std::io::Result<Vec<Link>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut req = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::from(RouteNetlinkMessage::GetLink(LinkMessage::default())),
    );
    req.header.flags = NLM_F_DUMP | NLM_F_REQUEST;
    req.header.sequence_number = 1;
    req.finalize();
    let mut buf = vec![0; req.buffer_len()];
    req.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let mut out = Vec::new();
    let mut rx = vec![0u8; 64 * 1024];
    loop {
        let size = socket.recv(&mut &mut rx[..], 0)?;
        let mut offset = 0;
        while offset < size {
            let msg: NetlinkMessage<RouteNetlinkMessage> =
                NetlinkMessage::deserialize(&rx[offset..size]).map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
                })?;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    return Err(e
                        .code
                        .map(|c| std::io::Error::from_raw_os_error(-c.get()))
                        .unwrap_or_else(|| std::io::Error::other("netlink error")));
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => {
                    out.push(link_of(&m))
                }
                _ => {}
            }
            if msg.header.length == 0 {
                break;
            }
            offset += msg.header.length as usize;
        }
    }
}

fn link_of(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        is_veth: false,
        peer: None,
        peer_netnsid: None,
        xdp: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Link(p) => l.peer = Some(*p),
            LinkAttribute::LinkNetNsId(id) => l.peer_netnsid = Some(*id),
            LinkAttribute::LinkInfo(infos) => {
                l.is_veth = infos
                    .iter()
                    .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth)));
            }
            LinkAttribute::Xdp(x) => l.xdp = xdp_of(x),
            _ => {}
        }
    }
    l
}

fn xdp_of(attrs: &[LinkXdp]) -> Option<(XdpAttach, u32)> {
    let mode = attrs.iter().find_map(|a| match a {
        LinkXdp::Attached(XdpAttached::Driver) => Some(XdpAttach::Native),
        LinkXdp::Attached(XdpAttached::SocketBuffer) => Some(XdpAttach::Generic),
        LinkXdp::Attached(XdpAttached::Hardware) => Some(XdpAttach::Offload),
        LinkXdp::Attached(XdpAttached::Multiple) => Some(XdpAttach::Multiple),
        _ => None,
    })?;
    let id = attrs
        .iter()
        .find_map(|a| match a {
            LinkXdp::ProgId(id) | LinkXdp::DrvProgId(id) | LinkXdp::SkbProgId(id) => Some(*id),
            _ => None,
        })
        .unwrap_or(0);
    Some((mode, id))
}

/// The interface named `name`, if there is one here.
pub fn link(name: &str) -> std::io::Result<Option<Link>> {
    Ok(links()?.into_iter().find(|l| l.name == name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed_without_xdp() {
        let lo = link("lo").unwrap().expect("lo exists in every namespace");
        assert_eq!(lo.index, 1);
        assert!(!lo.is_veth);
        assert_eq!(lo.xdp, None);
    }
}
