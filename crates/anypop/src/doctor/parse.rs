//! Parsers of `ethtool -k/-l/-x` and `ip route get` output — for tests only: doctor asks the
//! kernel (`sys::ethtool`, `sys::route`), and these read what the tools print, to hold the
//! kernel's answers against the tools' on interfaces a test creates, and to turn output captured
//! on real NICs (which no test machine has) into facts for the checks.
use std::collections::BTreeMap;

use super::{Channels, Feature, RouteAnswer};

/// `ethtool -k` output (`large-receive-offload: off [fixed]`) → feature name → state.
pub fn parse_features(text: &str) -> BTreeMap<String, Feature> {
    text.lines()
        .filter_map(|l| {
            let (name, rest) = l.trim().split_once(':')?;
            let mut words = rest.split_whitespace();
            let on = match words.next()? {
                "on" => true,
                "off" => false,
                _ => return None,
            };
            Some((
                name.to_string(),
                Feature {
                    on,
                    fixed: rest.contains("[fixed]"),
                },
            ))
        })
        .collect()
}

/// `ethtool -l` output: "Pre-set maximums:" then "Current hardware settings:", each with
/// `RX:`, `TX:`, `Other:`, `Combined:` lines.
pub fn parse_channels(text: &str) -> Option<Channels> {
    let mut ch = Channels::default();
    let mut current = None;
    let mut seen = false;
    for l in text.lines() {
        let l = l.trim();
        if l.starts_with("Pre-set maximums") {
            current = Some(false);
            continue;
        }
        if l.starts_with("Current hardware settings") {
            current = Some(true);
            continue;
        }
        let Some(cur) = current else { continue };
        let Some((key, value)) = l.split_once(':') else {
            continue;
        };
        let v = value.trim().parse::<u32>().ok();
        match (cur, key.trim()) {
            (false, "RX") => ch.max_rx = v,
            (false, "Combined") => ch.max_combined = v,
            (true, "RX") => {
                ch.rx = v;
                seen = true;
            }
            (true, "Combined") => {
                ch.combined = v;
                seen = true;
            }
            _ => {}
        }
    }
    seen.then_some(ch)
}

/// Whether `ethtool -x` printed an RSS indirection table.
pub fn has_indirection_table(text: &str) -> bool {
    text.contains("RX flow hash indirection table")
}

/// `198.51.100.21 via 10.0.0.1 dev eth0 src 10.0.0.2 uid 0` → dev, via; `local …` → local.
pub fn parse_route_get(text: &str) -> Option<RouteAnswer> {
    let first = text.lines().next()?;
    let w: Vec<&str> = first.split_whitespace().collect();
    let field = |k: &str| {
        w.iter()
            .position(|x| *x == k)
            .and_then(|i| w.get(i + 1))
            .map(|s| s.to_string())
    };
    if matches!(
        w.first().copied(),
        Some("unreachable" | "blackhole" | "prohibit" | "throw")
    ) {
        return Some(RouteAnswer::None(first.trim().to_string()));
    }
    Some(RouteAnswer::Route {
        dev: field("dev")?,
        via: field("via"),
        local: w.first() == Some(&"local"),
    })
}

/// What `ip route get ADDR` answers, read as doctor read it before it asked the kernel itself:
/// the route, or the error `ip` printed.
pub fn ip_route_get(addr: std::net::Ipv4Addr) -> RouteAnswer {
    let o = std::process::Command::new("ip")
        .args(["route", "get", &addr.to_string()])
        .output()
        .expect("ip (iproute2) runs");
    if o.status.success() {
        parse_route_get(&String::from_utf8_lossy(&o.stdout))
            .unwrap_or_else(|| RouteAnswer::None("no route in `ip route get`'s answer".into()))
    } else {
        RouteAnswer::None(super::one_line(&String::from_utf8_lossy(&o.stderr), 160))
    }
}

/// `ethtool ARGS`' standard output, or None when it fails (the driver refuses the request).
pub fn ethtool(args: &[&str]) -> Option<String> {
    let o = std::process::Command::new("ethtool")
        .args(args)
        .output()
        .expect("ethtool runs (scripts/setup.sh installs it)");
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// ethtool 6.1 (netlink) `-l` on a NIC with 8 of 63 combined channels (shared with `nic.rs`).
pub const ETHTOOL_L_6_1: &str = "Channel parameters for eth0:
Pre-set maximums:
RX:\t\tn/a
TX:\t\tn/a
Other:\t\t1
Combined:\t63
Current hardware settings:
RX:\t\tn/a
TX:\t\tn/a
Other:\t\t1
Combined:\t8
";

#[cfg(test)]
mod tests {
    use super::*;

    /// ethtool 4.19 (ioctl only) prints 0 where 5.x and later print n/a.
    const ETHTOOL_L_4_19: &str = "Channel parameters for eth0:
Pre-set maximums:
RX:\t\t0
TX:\t\t0
Other:\t\t1
Combined:\t63
Current hardware settings:
RX:\t\t0
TX:\t\t0
Other:\t\t1
Combined:\t8

";

    #[test]
    fn channels_of_old_and_new_ethtool_mean_the_same() {
        let old = parse_channels(ETHTOOL_L_4_19).unwrap();
        let new = parse_channels(ETHTOOL_L_6_1).unwrap();
        assert_eq!((old.max_rx, old.rx), (Some(0), Some(0)));
        assert_eq!((new.max_rx, new.rx), (None, None));
        assert_eq!(old.max_combined, Some(63));
        assert_eq!(old.rx_queues(), new.rx_queues());
        assert_eq!(new.rx_queues(), 8);
    }

    /// ethtool 6.1 `-k` on a veth (kernel 6.18), cut short; sub-features are indented with a tab.
    const ETHTOOL_K_6_1_VETH: &str = "Features for t0:
rx-checksumming: on
tx-checksumming: on
\ttx-checksum-ipv4: off [fixed]
\ttx-checksum-ip-generic: on
\ttx-checksum-ipv6: off [fixed]
\ttx-checksum-fcoe-crc: off [fixed]
\ttx-checksum-sctp: on
scatter-gather: on
\ttx-scatter-gather: on
\ttx-scatter-gather-fraglist: on
generic-receive-offload: off
large-receive-offload: off [fixed]
rx-gro-hw: off [fixed]
rx-gro-list: off
";

    /// ethtool 4.19 `-k` (ioctl) after `ethtool -K eth0 lro on` that the driver did not honour.
    const ETHTOOL_K_4_19: &str = "Features for eth0:
rx-checksumming: on
tx-checksumming: off
\ttx-checksum-ipv4: off
\ttx-checksum-ip-generic: off [fixed]
large-receive-offload: off [requested on]
rx-gro-hw: on
";

    #[test]
    fn features_of_several_ethtool_versions() {
        let f = parse_features(ETHTOOL_K_6_1_VETH);
        assert_eq!(f.len(), 14);
        assert!(f["tx-checksumming"].on && !f["tx-checksumming"].fixed);
        assert!(f["tx-checksum-ipv6"].fixed && !f["tx-checksum-ipv6"].on);
        assert!(f["large-receive-offload"].fixed);
        assert!(!f["rx-gro-list"].fixed);
        let f = parse_features(ETHTOOL_K_4_19);
        assert!(!f["large-receive-offload"].on && !f["large-receive-offload"].fixed);
        assert!(f["rx-gro-hw"].on);
        assert!(!f["tx-checksumming"].on);
    }

    /// `ethtool -x` prints the same header from 4.x (ioctl) to 6.x (netlink, from 6.2).
    const ETHTOOL_X_6_1: &str = "RX flow hash indirection table for eth0 with 8 RX ring(s):
    0:      0     1     2     3     4     5     6     7
    8:      0     1     2     3     4     5     6     7
RSS hash key:
6d:5a:56:da:25:5b:0e:c2:41:67:25:3d:43:a3:8f:b0:d0:ca:2b:cb:ae:7b:30:b4:77:cb:2d:a3:80:30:f2:0c:6a:42:b7:3b:be:ac:01:fa
RSS hash function:
    toeplitz: on
    xor: off
    crc32: off
";

    #[test]
    fn indirection_tables() {
        assert!(has_indirection_table(ETHTOOL_X_6_1));
        assert!(!has_indirection_table(
            "Cannot get RX ring count: Operation not supported\n"
        ));
    }

    #[test]
    fn ip_route_get_answers() {
        let r = parse_route_get("10.0.0.7 dev t0 src 10.0.0.2 uid 0 \n    cache \n").unwrap();
        assert_eq!(
            r,
            RouteAnswer::Route {
                dev: "t0".into(),
                via: None,
                local: false
            }
        );
        assert!(matches!(
            parse_route_get("blackhole 10.9.9.10 uid 0"),
            Some(RouteAnswer::None(_))
        ));
        assert_eq!(parse_route_get(""), None);
    }
}
