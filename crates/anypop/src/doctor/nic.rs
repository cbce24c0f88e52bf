//! What a NIC's driver says through ethtool, and the checks on it: offloads that merge packets
//! before XDP sees them, and RX queues (one queue: one core takes every packet).
use std::{collections::BTreeMap, process::Command};

use super::{Check, one_line};

/// One feature from `ethtool -k`: on/off and whether the driver lets it change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feature {
    pub on: bool,
    pub fixed: bool,
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

/// Channel counts from `ethtool -l`; `None` where it says `n/a`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Channels {
    pub max_rx: Option<u32>,
    pub max_combined: Option<u32>,
    pub rx: Option<u32>,
    pub combined: Option<u32>,
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

/// Why `ethtool` gave no answer.
#[derive(Debug)]
pub(super) enum EthtoolError {
    /// Not installed.
    Missing,
    /// It ran and failed (e.g. the driver does not support the request).
    Failed(String),
}

impl EthtoolError {
    pub(super) fn check(&self, ifname: &str, what: &str) -> Check {
        match self {
            EthtoolError::Missing => Check::warn(
                format!("{what} of {ifname} not checked: ethtool is not installed"),
                "apt-get install ethtool (or your distribution's package) and run doctor again",
            ),
            EthtoolError::Failed(e) => Check::warn(
                format!("{what} of {ifname} unknown: ethtool says {e:?}"),
                format!("check by hand with ethtool on {ifname}"),
            ),
        }
    }
}

pub(super) fn ethtool(args: &[&str]) -> Result<String, EthtoolError> {
    let out = Command::new("ethtool").args(args).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            EthtoolError::Missing
        } else {
            EthtoolError::Failed(e.to_string())
        }
    })?;
    if !out.status.success() {
        return Err(EthtoolError::Failed(one_line(
            &String::from_utf8_lossy(&out.stderr),
            160,
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::{Verdict, parse::*};
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

    const ETHTOOL_L_NIC: &str = "Channel parameters for eth0:
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

    #[test]
    fn features_and_offloads() {
        let f = parse_features(ETHTOOL_K_MLX);
        assert_eq!(
            f["large-receive-offload"],
            Feature {
                on: true,
                fixed: false
            }
        );
        assert_eq!(
            f["tx-checksum-ipv4"],
            Feature {
                on: false,
                fixed: true
            }
        );
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

        let nic = parse_channels(ETHTOOL_L_NIC).unwrap();
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
}
