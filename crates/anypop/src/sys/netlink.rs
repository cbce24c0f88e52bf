//! rtnetlink, the kernel's own answers about the network: the request/answer exchange the other
//! `sys` modules share ([`request`]), and interfaces as the kernel describes them (RTM_GETLINK):
//! name, kind, the veth peer and the XDP program attached — asked of the calling thread's network
//! namespace, never read from a command's text.
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

/// Why a question over rtnetlink got no answer. The kernel's own refusals keep their errno.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("opening a netlink socket: {source}")]
    Socket {
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the kernel over netlink: {source}")]
    Io {
        #[source]
        source: std::io::Error,
    },
    #[error("decoding the kernel's netlink answer: {source}")]
    Decode {
        #[source]
        source: netlink_packet_core::DecodeError,
    },
    /// The kernel answered the request with an error (`RTNETLINK answers: …` in iproute2's words).
    #[error("RTNETLINK answers: {}", strerror(*errno))]
    Kernel { errno: i32 },
    #[error("the kernel's netlink answer ended without one")]
    NoAnswer,
}

impl NetlinkError {
    /// The errno of a refusal by the kernel (not of a local failure).
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { errno } => Some(*errno),
            _ => None,
        }
    }
}

/// `strerror(errno)`: the text without Rust's ` (os error N)` suffix.
pub(crate) fn strerror(errno: i32) -> String {
    let full = std::io::Error::from_raw_os_error(errno).to_string();
    match full.rfind(" (os error ") {
        Some(i) => full[..i].to_string(),
        None => full,
    }
}

/// Sends `msg` to the kernel over a fresh rtnetlink socket (in the calling thread's network
/// namespace) and collects the messages that answer it: every one up to NLMSG_DONE for a dump,
/// the first for a plain request.
pub(crate) fn request(
    msg: RouteNetlinkMessage,
    dump: bool,
) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
    let io = |source| NetlinkError::Io { source };
    let mut socket =
        Socket::new(NETLINK_ROUTE).map_err(|source| NetlinkError::Socket { source })?;
    socket.bind_auto().map_err(io)?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(io)?;
    let mut req = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
    req.header.flags = if dump {
        NLM_F_DUMP | NLM_F_REQUEST
    } else {
        NLM_F_REQUEST
    };
    req.header.sequence_number = 1;
    req.finalize();
    let mut buf = vec![0; req.buffer_len()];
    req.serialize(&mut buf);
    socket.send(&buf, 0).map_err(io)?;
    let mut out = Vec::new();
    let mut rx = vec![0u8; 64 * 1024];
    loop {
        let size = socket.recv(&mut &mut rx[..], 0).map_err(io)?;
        if size == 0 {
            return Err(NetlinkError::NoAnswer);
        }
        let mut offset = 0;
        while offset < size {
            let msg: NetlinkMessage<RouteNetlinkMessage> =
                NetlinkMessage::deserialize(&rx[offset..size])
                    .map_err(|source| NetlinkError::Decode { source })?;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    return match e.code {
                        Some(c) => Err(NetlinkError::Kernel { errno: -c.get() }),
                        // An acknowledgement: nothing more is coming.
                        None => Ok(out),
                    };
                }
                NetlinkPayload::InnerMessage(m) => {
                    out.push(m);
                    if !dump {
                        return Ok(out);
                    }
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

/// Every interface of this thread's network namespace.
pub fn links() -> Result<Vec<Link>, NetlinkError> {
    let answer = request(RouteNetlinkMessage::GetLink(LinkMessage::default()), true)?;
    Ok(answer
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(link_of(l)),
            _ => None,
        })
        .collect())
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
pub fn link(name: &str) -> Result<Option<Link>, NetlinkError> {
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
