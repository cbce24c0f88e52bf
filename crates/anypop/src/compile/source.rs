//! IPv4 sources without the trie: the DIR-24-8 table (`SRC4_DIR`, one class byte per /24) with
//! its class table (`SRC4_CLASS`), and what each service's rules decide for a source of each
//! class (`SRC4_DECIDE`). See `anypop_common::layout::DIR_WORDS` and `DECIDE_WALK`.
use std::collections::{BTreeSet, HashMap};

use anypop_common::layout::*;
use ipnet::Ipv4Net;

use super::EdgeTables;

/// The DIR-24-8 table of one slot, as data: its class table and the class of every /24 as
/// ranges. The table itself is 16 MiB; [`SourceDir::fill`] writes it where it is needed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceDir {
    /// Class → prefix-set bitmap (`SRC4_CLASS`); class 0 = in no set.
    pub classes: Vec<u64>,
    /// (first /24, number of /24s, class), in write order: a later range overwrites an earlier
    /// one where they overlap. /24s in no range are class 0.
    pub ranges: Vec<(u32, u32, u8)>,
}

impl SourceDir {
    /// The table for the compiled (covering-unioned, sorted) IPv4 prefixes `v4`. Prefixes are
    /// visited in (address, length) order, so each one is written after every prefix containing
    /// it and overwrites only its own range with its (already unioned) sets. A /24 that holds
    /// longer prefixes is marked [`CLASS_USE_LPM`]; so is every listed /24 when more than 254
    /// distinct set combinations exist.
    pub fn build(v4: &[(Ipv4Net, u64)]) -> SourceDir {
        let mut classes: Vec<u64> = vec![0];
        let mut class_of: HashMap<u64, u8> = HashMap::new();
        let distinct: BTreeSet<u64> = v4.iter().map(|(_, b)| *b).collect();
        let too_many = distinct.len() > 254;
        let mut ranges = Vec::with_capacity(v4.len());
        for (net, bits) in v4 {
            if net.prefix_len() > 24 {
                continue;
            }
            let class = if too_many {
                CLASS_USE_LPM as u8
            } else {
                *class_of.entry(*bits).or_insert_with(|| {
                    classes.push(*bits);
                    (classes.len() - 1) as u8
                })
            };
            let start = u32::from(net.network()) >> 8;
            ranges.push((start, 1u32 << (24 - net.prefix_len()), class));
        }
        for (net, _) in v4 {
            if net.prefix_len() > 24 {
                ranges.push((u32::from(net.network()) >> 8, 1, CLASS_USE_LPM as u8));
            }
        }
        SourceDir { classes, ranges }
    }

    /// Writes the [`DIR_WORDS`] words of the table into `words` (one byte per /24, /24 number
    /// `b` in byte `b % 8` of word `b / 8`, least significant byte first).
    pub fn fill(&self, words: &mut [u64]) {
        assert_eq!(words.len(), DIR_WORDS as usize, "one slot of SRC4_DIR");
        words.fill(0);
        for &(start, count, class) in &self.ranges {
            for b in start..start + count {
                let w = (b >> 3) as usize;
                let shift = (b & 7) * 8;
                words[w] = (words[w] & !(0xff << shift)) | ((class as u64) << shift);
            }
        }
    }

    /// The table as a vector (tests and tools; the data plane fills the map in place).
    pub fn words(&self) -> Vec<u64> {
        let mut words = vec![0u64; DIR_WORDS as usize];
        self.fill(&mut words);
        words
    }
}

/// The `SRC4_DECIDE` rows of a generation: for every service (by generation-service index) and
/// every DIR-24-8 class (`classes[c]` = its prefix-set bitmap; class 0 = in no set), what the
/// service's rules decide for a source of that class (see `anypop_common::layout::DECIDE_WALK`).
/// It mirrors the program's rule walk: the rules the source can match are those naming one of its
/// sets plus those without a source condition; the first of them decides alone only if it has no
/// other condition. Classes without an entry (and [`CLASS_USE_LPM`]) walk.
pub fn decisions(tables: &EdgeTables, classes: &[u64]) -> Vec<(u32, Vec<u32>)> {
    let set_tbl: HashMap<u32, u64> = tables.set_table.iter().copied().collect();
    let rules: HashMap<u32, RuleEntry> = tables.rules.iter().copied().collect();
    let mut out = Vec::with_capacity(tables.service_info.len());
    for (gs, info) in &tables.service_info {
        let used = if info.rule_count >= 64 {
            u64::MAX
        } else {
            (1u64 << info.rule_count) - 1
        };
        // Rules without a protocol condition accept every protocol class.
        let any_protocol = info.proto_rules.iter().fold(u64::MAX, |a, b| a & b);
        let mut row = vec![DECIDE_WALK; CLASSES as usize];
        for (c, &sets) in classes.iter().enumerate().take(CLASS_USE_LPM as usize) {
            let mut src = info.any_src_rules;
            for chunk in 0..SET_CHUNKS {
                let byte = ((sets >> (chunk * 8)) & 0xff) as u32;
                if byte != 0 {
                    src |= set_tbl
                        .get(&set_table_index(*gs, chunk, byte))
                        .copied()
                        .unwrap_or(0);
                }
            }
            let candidates = src & used;
            row[c] = if candidates == 0 {
                DECIDE_NO_RULE
            } else {
                let slot = candidates.trailing_zeros();
                match rules.get(&(gs * RULES_PER_SERVICE + slot)) {
                    Some(r) if r.flags == 0 && (any_protocol >> slot) & 1 == 1 => {
                        decide_rule(slot, r.action == ACTION_DENY, r.rule_index)
                    }
                    _ => DECIDE_WALK,
                }
            };
        }
        out.push((*gs, row));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{compile::prefix_sets, config::sample};
    use std::path::Path;

    pub(crate) fn class_at(dir: &[u64], addr: &str) -> u64 {
        let a = u32::from(addr.parse::<std::net::Ipv4Addr>().unwrap());
        (dir[(a >> 11) as usize] >> (((a >> 8) & 7) * 8)) & 0xff
    }

    #[test]
    fn dir_classes_follow_longest_prefix() {
        let v4 = prefix_sets::compile_v4(&[
            ("10.0.0.0/8".parse().unwrap(), 1),
            ("10.1.0.0/16".parse().unwrap(), 2),
            ("10.1.2.128/25".parse().unwrap(), 4),
        ]);
        let d = SourceDir::build(&v4);
        let (dir, classes) = (d.words(), &d.classes);
        assert_eq!(classes[class_at(&dir, "10.9.9.9") as usize], 1);
        assert_eq!(classes[class_at(&dir, "10.1.9.9") as usize], 3);
        assert_eq!(
            class_at(&dir, "10.1.2.1"),
            CLASS_USE_LPM,
            "a /24 holding a /25 asks the trie"
        );
        assert_eq!(class_at(&dir, "11.0.0.1"), 0);
        assert_eq!(class_at(&dir, "9.255.255.255"), 0);
    }

    #[test]
    fn fill_clears_what_an_earlier_table_left() {
        let d = SourceDir::build(&prefix_sets::compile_v4(&[(
            "10.0.0.0/8".parse().unwrap(),
            1,
        )]));
        let mut words = vec![u64::MAX; DIR_WORDS as usize];
        d.fill(&mut words);
        assert_eq!(words, d.words());
        assert_eq!(class_at(&words, "11.0.0.1"), 0);
    }

    #[test]
    fn decisions_follow_first_match() {
        let [pop, be1] = sample::pop1_be1(&["a0"]);
        let text = sample::network(&[
            sample::udp_service("game", "27015"),
            sample::service("web", sample::VIP, "tcp")
                .str("ports", "443")
                .list("backends", &["be-1"]),
            sample::rule("friends", "allow").list("src", &["198.18.5.0/24"]),
            sample::rule("blocklist", "deny").list("src", &[sample::ATTACKERS]),
            sample::rule("no-udp", "deny")
                .list("services", &["web"])
                .str("protocol", "udp")
                .list("src", &["100.80.0.0/16"]),
            pop,
            be1,
        ]);
        let net = crate::config::parse(&text, "t.toml", Path::new(".")).unwrap();
        let t = crate::compile::compile_edge(&net, "pop-1", 1, 8).unwrap();
        let v4 = prefix_sets::compile_v4(&t.prefix_sets_v4);
        let d = SourceDir::build(&v4);
        let dir = d.words();
        let rows = decisions(&t, &d.classes);
        let (game, web) = (&rows[0], &rows[1]);
        assert_eq!((game.0, web.0), (8, 9), "generation 1 × 8 services + index");
        let at = |row: &(u32, Vec<u32>), a: &str| row.1[class_at(&dir, a) as usize];
        // In no set: no rule can match.
        assert_eq!(at(game, "100.64.1.2"), DECIDE_NO_RULE);
        // The friends' /24 is also in the blocklist: "friends" (slot 0) comes first.
        assert_eq!(at(game, "198.18.5.9"), decide_rule(0, false, 0));
        assert_eq!(at(game, "198.18.7.7"), decide_rule(1, true, 1));
        assert_eq!(at(web, "198.18.7.7"), decide_rule(1, true, 1));
        // "no-udp" has a protocol condition: web walks; game has no such rule.
        assert_eq!(at(web, "100.80.1.1"), DECIDE_WALK);
        assert_eq!(at(game, "100.80.1.1"), DECIDE_NO_RULE);
    }

    #[test]
    fn too_many_combinations_fall_back_to_the_trie() {
        let input: Vec<(Ipv4Net, u64)> = (0..300u32)
            .map(|i| {
                (
                    Ipv4Net::new(std::net::Ipv4Addr::from(0x0b00_0000 | (i << 8)), 24).unwrap(),
                    i as u64 + 1,
                )
            })
            .collect();
        let dir = SourceDir::build(&prefix_sets::compile_v4(&input)).words();
        assert_eq!(class_at(&dir, "11.0.5.1"), CLASS_USE_LPM);
        assert_eq!(class_at(&dir, "12.0.0.1"), 0);
    }
}
