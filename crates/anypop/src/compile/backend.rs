//! [`Network`] → the tables of a backend's programs (`decap`, `dsr`). Pure and unit-tested.
use std::net::IpAddr;

use anypop_common::layout::*;

use crate::config::{ConfigError, Network, Protocol, Role};

/// What a backend's programs need: its address, the POPs allowed to tunnel to it, and the IPv4
/// services it serves (every port expanded), plus the VIPs to set up locally.
#[derive(Clone, Debug, Default)]
pub struct BackendTables {
    pub settings: BackendSettings,
    /// POP tunnel sources, network byte order.
    pub pops: Vec<u32>,
    pub services: Vec<ServiceKey4>,
    pub vips: Vec<std::net::Ipv4Addr>,
}

/// Compiles the tables of backend `node`.
pub fn compile_backend(net: &Network, node: &str) -> Result<BackendTables, ConfigError> {
    let n = net.node(node)?;
    if n.role != Role::Backend {
        return Err(ConfigError::single(
            &net.origin,
            n.line,
            &format!("node {node:?}"),
            "",
            "is not a backend; decap and DSR run on role = \"backend\" nodes",
        ));
    }
    let mut t = BackendTables {
        settings: BackendSettings {
            address: u32::from_ne_bytes(n.address.expect("validated").octets()),
            mode: if n.tunnel_mode {
                BACKEND_TUNNEL
            } else {
                BACKEND_NATIVE
            },
        },
        ..Default::default()
    };
    for p in net.nodes.iter().filter(|p| p.role == Role::Pop) {
        if n.pops.is_empty() || n.pops.contains(&p.name) {
            t.pops.push(u32::from_ne_bytes(
                p.tunnel_source.expect("validated").octets(),
            ));
        }
    }
    for s in &net.services {
        let IpAddr::V4(vip) = s.vip else { continue };
        if !s.backends.iter().any(|(b, _)| b == node) {
            continue;
        }
        if !t.vips.contains(&vip) {
            t.vips.push(vip);
        }
        let proto = match s.protocol {
            Protocol::Udp => PROTO_UDP,
            Protocol::Tcp => PROTO_TCP,
            Protocol::Icmp => PROTO_ICMP,
        };
        let ports: Vec<u16> = if s.protocol == Protocol::Icmp {
            vec![0]
        } else {
            s.ports.iter().flat_map(|&(a, b)| a..=b).collect()
        };
        for port in ports {
            t.services.push(ServiceKey4 {
                addr: u32::from_ne_bytes(vip.octets()),
                port,
                proto,
                generation: 0,
            });
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use std::path::Path;

    const EXAMPLE: &str = include_str!("../config/example.toml");

    #[test]
    fn backend_tables() {
        let net = parse(EXAMPLE, "example.toml", Path::new(".")).unwrap();
        let t = compile_backend(&net, "be-fra-2").unwrap();
        assert_eq!(t.settings.address, u32::from_ne_bytes([192, 0, 2, 22]));
        assert_eq!(t.pops.len(), 2, "no `pops` list: every POP may tunnel here");
        // be-fra-2 serves rust-eu only (28015-28016), not web.
        assert_eq!(t.services.len(), 2);
        assert!(
            t.services
                .iter()
                .all(|k| k.proto == PROTO_UDP && k.generation == 0)
        );
        assert_eq!(t.vips, vec![std::net::Ipv4Addr::new(203, 0, 113, 10)]);
        let e = compile_backend(&net, "pop-nyc-1").unwrap_err().to_string();
        assert!(e.contains("is not a backend"), "{e}");
    }
}
