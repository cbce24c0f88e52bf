//! What a NIC's driver reports — offload features, channels (RX queues), the RSS indirection
//! table — and the checks on it: offloads that merge packets before XDP sees them, and RX queues
//! (one queue: one core takes every packet).
//!
//! The facts are asked of the kernel (`sys::ethtool`, the SIOCETHTOOL ioctl) and named as
//! `ethtool -k/-l/-x` print them, since the fixes are ethtool commands: a feature's legacy name
//! (`large-receive-offload` for the kernel's `rx-lro`), `n/a` (None) for a kind of channel the
//! device does not have.
use std::collections::BTreeMap;

use super::Check;
use crate::sys::ethtool::{self, EthtoolError};

/// The offload and RX-queue checks of `ifname`, on what its driver reports.
pub(super) fn nic_checks(ifname: &str, driver: Option<&str>, cpus: u32) -> Vec<Check> {
    let mut out = match ethtool::features(ifname) {
        Ok(f) => offload_checks(ifname, driver, &ethtool_k(&f)),
        Err(e) => vec![unknown_check(ifname, "offloads (LRO, hardware GRO)", &e)],
    };
    // A driver that reports no channels (EOPNOTSUPP) or fails to has its queues unknown.
    let ch = ethtool::channels(ifname).ok().map(Channels::from);
    // The indirection table only matters (and is only asked for) with several queues.
    let rss = match ch.as_ref().map(Channels::rx_queues) {
        Some(q) if q > 1 => Some(has_rss_table(ifname)),
        _ => None,
    };
    out.push(queue_check(ifname, ch.as_ref(), rss, cpus));
    out
}

fn unknown_check(ifname: &str, what: &str, e: &EthtoolError) -> Check {
    Check::warn(
        format!("{what} of {ifname} unknown: {e}"),
        format!("check by hand with ethtool on {ifname}"),
    )
}

/// One feature as `ethtool -k` shows it: on/off and whether the driver lets it change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feature {
    pub on: bool,
    pub fixed: bool,
}

impl From<&ethtool::Feature> for Feature {
    fn from(f: &ethtool::Feature) -> Feature {
        Feature {
            on: f.active,
            fixed: f.fixed(),
        }
    }
}

/// ethtool's legacy offload flags (`off_flag_def`, the same from ethtool 4.19 to 6.15): the
/// name `ethtool -k` prints, and the pattern (at most one `*`) of the kernel features it covers.
const LEGACY_FLAGS: [(&str, &str); 12] = [
    ("rx-checksumming", "rx-checksum"),
    ("tx-checksumming", "tx-checksum-*"),
    ("scatter-gather", "tx-scatter-gather*"),
    ("tcp-segmentation-offload", "tx-tcp*-segmentation"),
    ("udp-fragmentation-offload", "tx-udp-fragmentation"),
    ("generic-segmentation-offload", "tx-generic-segmentation"),
    ("generic-receive-offload", "rx-gro"),
    ("large-receive-offload", "rx-lro"),
    ("rx-vlan-offload", "rx-vlan-hw-parse"),
    ("tx-vlan-offload", "tx-vlan-hw-insert"),
    ("ntuple-filters", "rx-ntuple-filter"),
    ("receive-hashing", "rx-hashing"),
];

/// ethtool skips this flag: no kernel with the netlink interface has UFO.
const UFO: &str = "udp-fragmentation-offload";

fn flag_matches(name: &str, pattern: &str) -> bool {
    match pattern.split_once('*') {
        Some((head, tail)) => {
            name.len() >= head.len() + tail.len() && name.starts_with(head) && name.ends_with(tail)
        }
        None => name == pattern,
    }
}

/// The kernel's features under the names `ethtool -k` (6.1) prints: a legacy flag that covers
/// exactly one feature is that feature under the flag's name; one that covers several is on when
/// any of them is (and is never `[fixed]`), with each feature under its own name besides; every
/// other feature goes by its own name.
pub fn ethtool_k(features: &[ethtool::Feature]) -> BTreeMap<String, Feature> {
    let flag_of = |f: &ethtool::Feature| {
        LEGACY_FLAGS
            .iter()
            .position(|(_, pattern)| flag_matches(&f.name, pattern))
    };
    let mut out = BTreeMap::new();
    for (i, (long, _)) in LEGACY_FLAGS.iter().enumerate() {
        if *long == UFO {
            continue;
        }
        let covered: Vec<&ethtool::Feature> =
            features.iter().filter(|f| flag_of(f) == Some(i)).collect();
        if let [one] = covered[..] {
            out.insert(long.to_string(), Feature::from(one));
            continue;
        }
        let on = covered.iter().any(|f| f.active);
        out.insert(long.to_string(), Feature { on, fixed: false });
        for f in covered {
            out.insert(f.name.clone(), Feature::from(f));
        }
    }
    for f in features.iter().filter(|f| flag_of(f).is_none()) {
        out.insert(f.name.clone(), Feature::from(f));
    }
    out
}

/// LRO merges packets before XDP sees them (drivers refuse native XDP with it on, or hand XDP
/// frames it cannot forward): FAIL. Hardware GRO does the same on the NICs that have it: warn
/// (most drivers turn it off themselves when XDP attaches). veth with TX checksum offload leaves
/// checksums unfinished in frames that XDP then forwards (see the README): warn.
pub fn offload_checks(
    ifname: &str,
    driver: Option<&str>,
    features: &BTreeMap<String, Feature>,
) -> Vec<Check> {
    let mut out = Vec::new();
    let on = |name: &str| features.get(name).filter(|f| f.on);
    if let Some(f) = on("large-receive-offload") {
        out.push(Check::fail(
            format!(
                "LRO is on on {ifname}: it merges packets before XDP sees them, and drivers refuse native XDP with it"
            ),
            if f.fixed {
                "this driver cannot turn LRO off ([fixed]): use another NIC or driver".to_string()
            } else {
                format!("ethtool -K {ifname} lro off (make it permanent in the interface's configuration)")
            },
        ));
    }
    if let Some(f) = on("rx-gro-hw") {
        out.push(Check::warn(
            format!(
                "hardware GRO is on on {ifname}: it merges packets before XDP sees them (some drivers refuse native XDP with it)"
            ),
            if f.fixed {
                "this driver cannot turn hardware GRO off ([fixed]); check that native XDP attaches".to_string()
            } else {
                format!("ethtool -K {ifname} rx-gro-hw off")
            },
        ));
    }
    if out.is_empty() {
        let state = |name: &str| match features.get(name) {
            Some(f) if f.on => "on",
            Some(_) => "off",
            None => "absent",
        };
        out.push(Check::ok(format!(
            "offloads on {ifname}: LRO {}, hardware GRO {}",
            state("large-receive-offload"),
            state("rx-gro-hw")
        )));
    }
    if driver == Some("veth") && on("tx-checksumming").is_some() {
        out.push(Check::warn(
            format!(
                "TX checksum offload is on on veth {ifname}: veth leaves checksums to hardware that does not exist, and once XDP forwards a frame nobody completes them"
            ),
            format!("ethtool -K {ifname} tx off"),
        ));
    }
    out
}

/// Channel counts as `ethtool -l` shows them; `None` where it says `n/a`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Channels {
    pub max_rx: Option<u32>,
    pub max_combined: Option<u32>,
    pub rx: Option<u32>,
    pub combined: Option<u32>,
}

/// As `ethtool -l` shows them: a kind of channel the device does not have (maximum 0) is `n/a`,
/// in the maximums and in the current settings alike.
impl From<ethtool::Channels> for Channels {
    fn from(c: ethtool::Channels) -> Channels {
        let kind = |max: u32, now: u32| (max != 0).then_some((max, now));
        let rx = kind(c.max_rx, c.rx);
        let combined = kind(c.max_combined, c.combined);
        Channels {
            max_rx: rx.map(|r| r.0),
            max_combined: combined.map(|c| c.0),
            rx: rx.map(|r| r.1),
            combined: combined.map(|c| c.1),
        }
    }
}

/// Whether the device has an RSS indirection table, which is what `ethtool -x` shows: the driver
/// reports its RX rings (ETHTOOL_GRXRINGS) and a table of at least one entry (ETHTOOL_GRXFHINDIR).
pub fn has_rss_table(ifname: &str) -> bool {
    ethtool::rx_rings(ifname).is_ok() && ethtool::indirection_size(ifname).is_ok_and(|n| n > 0)
}

impl Channels {
    /// RX queues in use: dedicated RX channels plus combined ones (at least 1: a NIC that
    /// reports none has its one queue).
    pub fn rx_queues(&self) -> u32 {
        (self.rx.unwrap_or(0) + self.combined.unwrap_or(0)).max(1)
    }
}

/// XDP runs on the core that services the RX queue: one queue means one core does all of it,
/// whatever the machine has. `channels`: None when the driver does not report them.
pub fn queue_check(
    ifname: &str,
    channels: Option<&Channels>,
    rss: Option<bool>,
    cpus: u32,
) -> Check {
    let Some(ch) = channels else {
        return Check::warn(
            format!(
                "RX queues of {ifname} unknown (the driver does not report channels to `ethtool -l`)"
            ),
            "make sure the NIC spreads traffic over several RX queues (RSS): with one queue one core takes every packet",
        );
    };
    let queues = ch.rx_queues();
    if queues == 1 && cpus > 1 {
        let fix = match (ch.max_combined, ch.max_rx) {
            (Some(m), _) if m > 1 => {
                format!("ethtool -L {ifname} combined {}", m.min(cpus))
            }
            (_, Some(m)) if m > 1 => format!("ethtool -L {ifname} rx {}", m.min(cpus)),
            _ => format!(
                "use a multi-queue NIC (on a VM: a virtio NIC with queues={cpus}), then ethtool -L {ifname} combined {cpus}"
            ),
        };
        return Check::warn(
            format!(
                "1 RX queue on {ifname} on a {cpus}-core machine: one core runs XDP for every packet"
            ),
            fix,
        );
    }
    if queues > 1 && rss == Some(false) {
        return Check::warn(
            format!(
                "{queues} RX queues on {ifname} but no RSS indirection table: traffic may not be spread over them"
            ),
            format!("ethtool -K {ifname} rxhash on; ethtool -X {ifname} equal {queues}"),
        );
    }
    Check::ok(format!(
        "{queues} RX queue{} on {ifname}{} ({cpus} cores)",
        if queues == 1 { "" } else { "s" },
        if rss == Some(true) { " with RSS" } else { "" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::{Verdict, parse::*};
    use crate::sys::testns::{in_private_netns, sh};

    /// The four states a feature can show in `ethtool -k`.
    const fn feature(on: bool, fixed: bool) -> Feature {
        Feature { on, fixed }
    }
    const ON: Feature = feature(true, false);
    const OFF: Feature = feature(false, false);
    const OFF_FIXED: Feature = feature(false, true);
    const ON_FIXED: Feature = feature(true, true);

    const ETHTOOL_K_MLX: &str = "Features for eth0:
rx-checksumming: on
tx-checksumming: on
\ttx-checksum-ipv4: off [fixed]
generic-receive-offload: on
large-receive-offload: on
rx-gro-hw: off [requested on]
";

    const ETHTOOL_L_VETH: &str = "Channel parameters for t0:
Pre-set maximums:
RX:\t\t2
TX:\t\t2
Other:\t\tn/a
Combined:\tn/a
Current hardware settings:
RX:\t\t1
TX:\t\t1
Other:\t\tn/a
Combined:\tn/a
";

    #[test]
    fn features_and_offloads() {
        let f = parse_features(ETHTOOL_K_MLX);
        assert_eq!(f["large-receive-offload"], ON);
        assert_eq!(f["tx-checksum-ipv4"], OFF_FIXED);
        assert!(!f["rx-gro-hw"].on);
        assert!(!f.contains_key("Features for eth0"));
        let c = offload_checks("eth0", Some("mlx5_core"), &f);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].verdict, Verdict::Fail);
        assert_eq!(
            c[0].fix.as_deref(),
            Some("ethtool -K eth0 lro off (make it permanent in the interface's configuration)")
        );

        let gro = parse_features("rx-gro-hw: on\nlarge-receive-offload: off\n");
        let c = offload_checks("eth1", Some("bnxt_en"), &gro);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].verdict, Verdict::Warn);
        assert_eq!(c[0].fix.as_deref(), Some("ethtool -K eth1 rx-gro-hw off"));

        let veth = parse_features(
            "tx-checksumming: on\nlarge-receive-offload: off [fixed]\nrx-gro-hw: off [fixed]\n",
        );
        let c = offload_checks("t0", Some("veth"), &veth);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0], Check::ok("offloads on t0: LRO off, hardware GRO off"));
        assert_eq!(c[1].verdict, Verdict::Warn);
        assert_eq!(c[1].fix.as_deref(), Some("ethtool -K t0 tx off"));
        // The same offload on a real NIC is fine.
        let c = offload_checks("eth0", Some("ixgbe"), &veth);
        assert_eq!(
            c,
            vec![Check::ok("offloads on eth0: LRO off, hardware GRO off")]
        );
        let fixed_on = parse_features("large-receive-offload: on [fixed]\n");
        assert!(
            offload_checks("e", None, &fixed_on)[0]
                .fix
                .as_deref()
                .unwrap()
                .contains("cannot turn LRO off")
        );
    }

    #[test]
    fn channels_and_queues() {
        let veth = parse_channels(ETHTOOL_L_VETH).unwrap();
        assert_eq!(veth.rx_queues(), 1);
        assert_eq!(veth.max_rx, Some(2));
        let c = queue_check("t0", Some(&veth), None, 4);
        assert_eq!(c.verdict, Verdict::Warn);
        assert_eq!(c.fix.as_deref(), Some("ethtool -L t0 rx 2"));
        assert_eq!(queue_check("t0", Some(&veth), None, 1).verdict, Verdict::Ok);

        let nic = parse_channels(ETHTOOL_L_6_1).unwrap();
        assert_eq!(nic.rx_queues(), 8);
        assert_eq!(nic.max_combined, Some(63));
        let c = queue_check("eth0", Some(&nic), Some(true), 16);
        assert_eq!(c, Check::ok("8 RX queues on eth0 with RSS (16 cores)"));
        let c = queue_check("eth0", Some(&nic), Some(false), 16);
        assert_eq!(c.verdict, Verdict::Warn);
        assert!(c.fix.unwrap().contains("ethtool -X eth0 equal 8"));

        let one = Channels {
            max_combined: Some(8),
            combined: Some(1),
            ..Default::default()
        };
        assert_eq!(
            queue_check("eth0", Some(&one), None, 4).fix.as_deref(),
            Some("ethtool -L eth0 combined 4")
        );
        assert_eq!(queue_check("br0", None, None, 4).verdict, Verdict::Warn);
        assert_eq!(parse_channels("Cannot get device channel parameters"), None);
        assert!(has_indirection_table(
            "RX flow hash indirection table for eth0 with 8 RX ring(s):\n    0:      0     1"
        ));
        assert!(!has_indirection_table(""));
    }

    fn kernel_feature(name: &str, active: bool, available: bool) -> ethtool::Feature {
        ethtool::Feature {
            name: name.into(),
            available,
            requested: active,
            active,
            never_changed: false,
        }
    }

    #[test]
    fn features_go_by_the_names_ethtool_k_prints() {
        let f = ethtool_k(&[
            kernel_feature("rx-lro", true, true),
            kernel_feature("rx-gro-hw", false, false),
            kernel_feature("tx-checksum-ipv4", false, false),
            kernel_feature("tx-checksum-ip-generic", true, true),
            kernel_feature("tx-udp-fragmentation", true, true),
            kernel_feature("tx-tcp6-segmentation", true, true),
            kernel_feature("highdma", true, false),
        ]);
        // One feature behind a legacy flag: the flag's name only.
        assert_eq!(f["large-receive-offload"], ON);
        assert!(!f.contains_key("rx-lro"));
        // Several: the flag (on if any is) and each feature.
        assert_eq!(f["tx-checksumming"], ON);
        assert_eq!(f["tx-checksum-ipv4"], OFF_FIXED);
        assert!(f["tx-checksum-ip-generic"].on);
        // tcp-segmentation-offload covers one feature here, so only the flag's name appears.
        assert!(f["tcp-segmentation-offload"].on && !f.contains_key("tx-tcp6-segmentation"));
        // A flag that covers none is shown off; UFO is never shown.
        assert_eq!(f["receive-hashing"], OFF);
        assert!(!f.contains_key("udp-fragmentation-offload"));
        assert!(!f.contains_key("tx-udp-fragmentation"));
        assert_eq!(f["rx-gro-hw"], OFF_FIXED);
        assert_eq!(f["highdma"], ON_FIXED);
        assert!(flag_matches("tx-checksum-", "tx-checksum-*"));
        assert!(!flag_matches("tx-tcp-segmentatio", "tx-tcp*-segmentation"));
        assert!(flag_matches("tx-tcp-segmentation", "tx-tcp*-segmentation"));
    }

    #[test]
    fn channels_read_as_ethtool_l_shows_them() {
        let veth = ethtool::Channels {
            max_rx: 2,
            max_tx: 2,
            rx: 1,
            tx: 1,
            ..Default::default()
        };
        assert_eq!(
            Channels::from(veth),
            parse_channels(ETHTOOL_L_VETH).unwrap()
        );
        let nic = ethtool::Channels {
            max_other: 1,
            max_combined: 63,
            other: 1,
            combined: 8,
            ..Default::default()
        };
        assert_eq!(Channels::from(nic), parse_channels(ETHTOOL_L_6_1).unwrap());
    }

    /// The kernel's answers, named as ethtool names them, against what ethtool prints, on
    /// interfaces made for the test: every feature, the channels, the indirection table.
    #[test]
    fn the_kernels_answers_are_what_ethtool_prints() {
        in_private_netns(|| {
            sh(&[
                "ip", "link", "add", "n0", "type", "veth", "peer", "name", "n1",
            ]);
            sh(&[
                "ip", "link", "add", "n2", "type", "veth", "peer", "name", "n3",
            ]);
            sh(&["ethtool", "-K", "n2", "tx", "off", "gro", "on"]);
            let queues = ethtool::channels("n2").unwrap().max_rx.min(2).to_string();
            sh(&["ethtool", "-L", "n2", "rx", &queues]);
            sh(&["ip", "link", "add", "n4", "type", "bridge"]);
            for ifname in ["n0", "n2", "n4", "lo"] {
                let text = ethtool(&["-k", ifname]).unwrap();
                assert_eq!(
                    ethtool_k(&ethtool::features(ifname).unwrap()),
                    parse_features(&text),
                    "{ifname}: {text}"
                );
                let kernel = ethtool::channels(ifname).ok().map(Channels::from);
                let text = ethtool(&["-l", ifname]);
                assert_eq!(
                    kernel,
                    text.as_deref().and_then(parse_channels),
                    "{ifname}: {text:?}"
                );
                let text = ethtool(&["-x", ifname]).unwrap_or_default();
                assert_eq!(
                    has_rss_table(ifname),
                    has_indirection_table(&text),
                    "{ifname}: {text}"
                );
            }
        });
    }

    #[test]
    fn nic_checks_on_a_veth() {
        let checks = in_private_netns(|| {
            sh(&[
                "ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1",
            ]);
            nic_checks("v0", Some("veth"), 4)
        });
        assert_eq!(
            checks[0],
            Check::ok("offloads on v0: LRO off, hardware GRO off")
        );
        assert_eq!(checks[1].fix.as_deref(), Some("ethtool -K v0 tx off"));
        assert_eq!(checks[2].verdict, Verdict::Warn);
        assert!(
            checks[2]
                .what
                .starts_with("1 RX queue on v0 on a 4-core machine")
        );
        let bridge = in_private_netns(|| {
            sh(&["ip", "link", "add", "b0", "type", "bridge"]);
            nic_checks("b0", Some("bridge"), 4)
        });
        assert_eq!(bridge.len(), 2, "{bridge:?}");
        assert!(bridge[1].what.starts_with("RX queues of b0 unknown"));
        let gone = nic_checks("nosuch0", None, 4);
        assert_eq!(gone[0].verdict, Verdict::Warn);
        assert!(
            gone[0]
                .what
                .starts_with("offloads (LRO, hardware GRO) of nosuch0 unknown: ETHTOOL_GSSET_INFO on nosuch0: No such device"),
            "{}",
            gone[0].what
        );
    }
}
