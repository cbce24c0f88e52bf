//! Maglev consistent hashing (Eisenbud et al., NSDI 2016) with weights.
//!
//! Every POP must compute the *same* table from the same config, so a player whose route moves
//! to another POP lands on the same backend. Hence each backend's permutation comes from a hash of
//! its *name* (never its position in a list), and backends are filled in name order.
use std::vec::Vec;

use crate::{hash::name_hash, layout::NONE};

/// A backend as Maglev sees it.
#[derive(Clone, Copy, Debug)]
pub struct MaglevBackend<'a> {
    pub name: &'a str,
    /// Relative share of the table; 0 = drained (no entries).
    pub weight: u32,
}

/// True when `n` is prime (table sizes must be, so every skip visits every slot).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u64;
    while d * d <= n as u64 {
        if (n as u64).is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// Builds a table of `size` entries (a prime), each an index into `backends`, or [`NONE`] in
/// every entry when no backend has a weight above zero.
///
/// Backend names must be unique: they are the only thing that orders and places backends, so two
/// equal names would make the result depend on the order of the list again.
///
/// Weighted fill: each round every backend earns `weight` credit and claims one slot per
/// `max_weight` of credit, so shares follow weights while each backend still walks its own
/// permutation (which keeps disruption minimal when one backend leaves). A backend of weight 0 is
/// left out before anything else happens, so draining one gives exactly the table of removing it:
/// drain-then-remove moves players once, not twice.
///
/// # Panics
/// When `size` is not prime: a skip that shares a factor with the size would visit only part of
/// the table, and the fill would never finish.
pub fn build(backends: &[MaglevBackend<'_>], size: u32) -> Vec<u32> {
    assert!(is_prime(size), "Maglev table size {size} must be prime");
    let m = size as u64;
    let mut order: Vec<usize> = (0..backends.len())
        .filter(|&i| backends[i].weight > 0)
        .collect();
    let mut table = std::vec![NONE; size as usize];
    if order.is_empty() {
        return table;
    }
    order.sort_by(|&a, &b| backends[a].name.cmp(backends[b].name));
    debug_assert!(
        order
            .windows(2)
            .all(|w| backends[w[0]].name != backends[w[1]].name),
        "Maglev backend names must be unique"
    );
    let max_w = order
        .iter()
        .map(|&i| backends[i].weight as u64)
        .max()
        .unwrap_or(1);
    let perm: Vec<(u64, u64)> = order
        .iter()
        .map(|&i| {
            let name = backends[i].name.as_bytes();
            let offset = name_hash(name, 0x6d61_676c_6576_3031) % m;
            let skip = name_hash(name, 0x6d61_676c_6576_3032) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = std::vec![0u64; order.len()];
    let mut credit = std::vec![0u64; order.len()];
    let mut filled = 0u64;
    'fill: loop {
        for k in 0..order.len() {
            credit[k] += backends[order[k]].weight as u64;
            while credit[k] >= max_w {
                credit[k] -= max_w;
                // Next preferred slot of backend k that is still free.
                let (offset, skip) = perm[k];
                let mut c = (offset + next[k] * skip) % m;
                while table[c as usize] != NONE {
                    next[k] += 1;
                    c = (offset + next[k] * skip) % m;
                }
                table[c as usize] = order[k] as u32;
                next[k] += 1;
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::MAGLEV_SIZE;
    use proptest::strategy::Strategy;
    use std::{format, string::String, vec::Vec};

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("be-{i}")).collect()
    }

    fn shares(table: &[u32], n: usize) -> Vec<f64> {
        let mut c = std::vec![0u64; n];
        for &e in table {
            c[e as usize] += 1;
        }
        c.iter().map(|&x| x as f64 / table.len() as f64).collect()
    }

    #[test]
    fn equal_weights_balance_within_one_percent() {
        for n in [2usize, 3, 5, 10, 32] {
            let nm = names(n);
            let b: Vec<MaglevBackend> = nm
                .iter()
                .map(|s| MaglevBackend { name: s, weight: 1 })
                .collect();
            let t = build(&b, MAGLEV_SIZE);
            for (i, s) in shares(&t, n).iter().enumerate() {
                let want = 1.0 / n as f64;
                assert!(
                    (s - want).abs() / want < 0.01,
                    "n={n} backend {i}: share {s}, want {want}"
                );
            }
        }
    }

    #[test]
    fn weights_balance_within_one_percent() {
        let nm = names(3);
        let b: Vec<MaglevBackend> = nm
            .iter()
            .zip([1, 2, 3])
            .map(|(s, w)| MaglevBackend { name: s, weight: w })
            .collect();
        let t = build(&b, MAGLEV_SIZE);
        for (i, s) in shares(&t, 3).iter().enumerate() {
            let want = (i + 1) as f64 / 6.0;
            assert!(
                (s - want).abs() / want < 0.01,
                "backend {i}: share {s}, want {want}"
            );
        }
    }

    #[test]
    fn removing_one_of_n_moves_about_one_nth() {
        let n = 10;
        let nm = names(n);
        let all: Vec<MaglevBackend> = nm
            .iter()
            .map(|s| MaglevBackend { name: s, weight: 1 })
            .collect();
        let before = build(&all, MAGLEV_SIZE);
        // Remove be-3: a new list without it (indices shift; compare by name).
        let rest: Vec<MaglevBackend> = all.iter().copied().filter(|b| b.name != "be-3").collect();
        let after = build(&rest, MAGLEV_SIZE);
        let mut moved = 0usize;
        let mut on_removed = 0usize;
        for (&b, &a) in before.iter().zip(&after) {
            let was = all[b as usize].name;
            on_removed += usize::from(was == "be-3");
            moved += usize::from(was != rest[a as usize].name);
        }
        let size = before.len() as f64;
        let frac = moved as f64 / size;
        assert!(
            frac >= 0.9 / n as f64 && frac <= 1.1 / n as f64,
            "moved {frac}"
        );
        // Every entry of be-3 had to move; of the others, Maglev's churn moves well under 1%.
        let extra = (moved - on_removed) as f64 / size;
        assert!(extra < 0.01, "entries moved between survivors: {extra}");

        // Draining (weight 0) gives exactly the table of removing.
        let drained: Vec<MaglevBackend> = all
            .iter()
            .map(|b| MaglevBackend {
                weight: if b.name == "be-3" { 0 } else { b.weight },
                ..*b
            })
            .collect();
        let t = build(&drained, MAGLEV_SIZE);
        for (&d, &r) in t.iter().zip(&after) {
            assert_eq!(drained[d as usize].name, rest[r as usize].name);
        }
    }

    #[test]
    fn order_of_the_list_does_not_matter() {
        let nm = names(5);
        let a: Vec<MaglevBackend> = nm
            .iter()
            .map(|s| MaglevBackend { name: s, weight: 1 })
            .collect();
        let mut b = a.clone();
        b.reverse();
        let ta = build(&a, 65_537);
        let tb = build(&b, 65_537);
        for i in 0..ta.len() {
            assert_eq!(a[ta[i] as usize].name, b[tb[i] as usize].name);
        }
    }

    #[test]
    fn drained_and_empty() {
        let b = [
            MaglevBackend {
                name: "a",
                weight: 1,
            },
            MaglevBackend {
                name: "b",
                weight: 0,
            },
        ];
        let t = build(&b, 13);
        assert!(t.iter().all(|&e| e == 0));
        let z = [MaglevBackend {
            name: "a",
            weight: 0,
        }];
        assert!(build(&z, 13).iter().all(|&e| e == NONE));
        assert!(build(&[], 13).iter().all(|&e| e == NONE));
    }

    /// Pinned tables: every POP, and every version of anypop during a rolling upgrade, must build
    /// the same table, so any change to the hash, the seeds or the fill order must fail here.
    #[test]
    fn small_table_is_stable() {
        let b = [
            MaglevBackend {
                name: "x",
                weight: 1,
            },
            MaglevBackend {
                name: "y",
                weight: 1,
            },
        ];
        assert_eq!(build(&b, 13), [1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1, 0, 0]);
        let w = [
            MaglevBackend {
                name: "x",
                weight: 1,
            },
            MaglevBackend {
                name: "y",
                weight: 1,
            },
            MaglevBackend {
                name: "z",
                weight: 2,
            },
        ];
        assert_eq!(build(&w, 13), [1, 2, 2, 2, 1, 0, 0, 0, 2, 2, 1, 2, 2]);
    }

    #[test]
    #[should_panic(expected = "must be prime")]
    fn a_size_that_is_not_prime_is_refused() {
        build(
            &[MaglevBackend {
                name: "a",
                weight: 1,
            }],
            65_536,
        );
    }

    proptest::proptest! {
        /// Any order of the same backends, weights included, gives the same table by name.
        #[test]
        fn any_order_gives_the_same_table(
            (weights, shuffled) in proptest::collection::vec(0u32..5, 1..12).prop_flat_map(|w| {
                let idx: Vec<usize> = (0..w.len()).collect();
                (proptest::strategy::Just(w), proptest::strategy::Just(idx).prop_shuffle())
            })
        ) {
            let nm = names(weights.len());
            let a: Vec<MaglevBackend> = nm
                .iter()
                .zip(&weights)
                .map(|(s, &w)| MaglevBackend { name: s, weight: w })
                .collect();
            let b: Vec<MaglevBackend> = shuffled.iter().map(|&i| a[i]).collect();
            let (ta, tb) = (build(&a, 251), build(&b, 251));
            for (&x, &y) in ta.iter().zip(&tb) {
                let nx = (x != NONE).then(|| a[x as usize].name);
                let ny = (y != NONE).then(|| b[y as usize].name);
                proptest::prop_assert_eq!(nx, ny);
            }
        }
    }

    #[test]
    fn primes() {
        assert!(is_prime(65_537) && is_prime(13) && !is_prime(65_536) && !is_prime(1));
    }
}
