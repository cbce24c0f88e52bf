//! Writing a program's maps: entries into hash maps and arrays, one LPM-trie writer for both
//! address families (it applies a diff), and whole array halves through a memory mapping.
use std::{
    collections::{BTreeMap, HashSet},
    hash::Hash,
    os::fd::{AsFd, AsRawFd},
};

use aya::{
    Ebpf, Pod,
    maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, lpm_trie::Key},
};

use super::DataplaneError;
use crate::compile::LpmKey;

/// `.map_err(map_err(name))`: an error of map `name`, with aya's error (and its errno) as source.
pub(crate) fn map_err(name: &str) -> impl Fn(MapError) -> DataplaneError + '_ {
    move |source| DataplaneError::Map {
        map: name.to_owned(),
        source,
    }
}

/// The map `name` of a loaded object.
pub(crate) fn map<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Map, DataplaneError> {
    ebpf.map_mut(name)
        .ok_or_else(|| DataplaneError::MapMissing {
            map: name.to_owned(),
        })
}

/// Inserts entries into a hash map.
pub(crate) fn put_hash<K: Pod, V: Pod>(
    ebpf: &mut Ebpf,
    name: &str,
    entries: impl IntoIterator<Item = (K, V)>,
) -> Result<(), DataplaneError> {
    let mut m: HashMap<&mut MapData, K, V> =
        HashMap::try_from(map(ebpf, name)?).map_err(map_err(name))?;
    for (k, v) in entries {
        m.insert(k, v, 0).map_err(map_err(name))?;
    }
    Ok(())
}

/// Sets entries of an array map.
pub(crate) fn put_array<V: Pod>(
    ebpf: &mut Ebpf,
    name: &str,
    entries: impl IntoIterator<Item = (u32, V)>,
) -> Result<(), DataplaneError> {
    let mut m: Array<&mut MapData, V> = Array::try_from(map(ebpf, name)?).map_err(map_err(name))?;
    for (i, v) in entries {
        m.set(i, v, 0).map_err(map_err(name))?;
    }
    Ok(())
}

/// Makes the hash map `name` hold exactly `keys`, each with `value`: every key is (re)written,
/// then the keys not in `keys` are removed.
pub(crate) fn set_hash_keys<K: Pod + Eq + Hash, V: Pod>(
    ebpf: &mut Ebpf,
    name: &str,
    keys: &[K],
    value: V,
) -> Result<(), DataplaneError> {
    let wanted: HashSet<K> = keys.iter().copied().collect();
    let mut m: HashMap<&mut MapData, K, V> =
        HashMap::try_from(map(ebpf, name)?).map_err(map_err(name))?;
    let old: Vec<K> = m
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !wanted.contains(k))
        .collect();
    for k in keys {
        m.insert(k, value, 0).map_err(map_err(name))?;
    }
    for k in old {
        let _ = m.remove(&k);
    }
    Ok(())
}

/// Removes the hash-map entries whose key matches `belongs`.
pub(crate) fn clear_hash<K: Pod, V: Pod>(
    ebpf: &mut Ebpf,
    name: &str,
    belongs: impl Fn(&K) -> bool,
) -> Result<(), DataplaneError> {
    let mut m: HashMap<&mut MapData, K, V> =
        HashMap::try_from(map(ebpf, name)?).map_err(map_err(name))?;
    let keys: Vec<K> = m
        .keys()
        .filter_map(Result::ok)
        .filter(|k| belongs(k))
        .collect();
    for k in keys {
        let _ = m.remove(&k);
    }
    Ok(())
}

/// Removes the LPM entries whose data matches `belongs`.
pub(crate) fn clear_lpm<D: Pod>(
    ebpf: &mut Ebpf,
    name: &str,
    belongs: impl Fn(&D) -> bool,
) -> Result<(), DataplaneError> {
    let mut m: LpmTrie<&mut MapData, D, u64> =
        LpmTrie::try_from(map(ebpf, name)?).map_err(map_err(name))?;
    let keys: Vec<Key<D>> = m
        .keys()
        .filter_map(Result::ok)
        .filter(|k| belongs(&k.data()))
        .collect();
    for k in keys {
        let _ = m.remove(&k);
    }
    Ok(())
}

/// Entries to remove and to (re)write to turn `old` (None: an empty slot) into `new`.
pub(crate) fn trie_delta<N: Ord + Copy>(
    old: Option<&[(N, u64)]>,
    new: &[(N, u64)],
) -> (Vec<N>, Vec<(N, u64)>) {
    let Some(old) = old else {
        return (Vec::new(), new.to_vec());
    };
    let old_map: BTreeMap<N, u64> = old.iter().copied().collect();
    let new_map: BTreeMap<N, u64> = new.iter().copied().collect();
    let gone = old_map
        .keys()
        .filter(|k| !new_map.contains_key(k))
        .copied()
        .collect();
    let changed = new_map
        .iter()
        .filter(|(k, v)| old_map.get(k) != Some(v))
        .map(|(k, v)| (*k, *v))
        .collect();
    (gone, changed)
}

/// Turns the LPM trie `name` from `old` (what this process last wrote into the slot; None: the
/// slot's entries were cleared) into `new`, touching only the entries that differ. Returns the
/// number of entries removed or written.
pub(crate) fn write_trie<D: Pod + Ord>(
    ebpf: &mut Ebpf,
    name: &str,
    old: Option<&[(LpmKey<D>, u64)]>,
    new: &[(LpmKey<D>, u64)],
) -> Result<usize, DataplaneError> {
    let (gone, changed) = trie_delta(old, new);
    let key = |k: &LpmKey<D>| Key::new(k.prefix_len, k.data);
    let mut m: LpmTrie<&mut MapData, D, u64> =
        LpmTrie::try_from(map(ebpf, name)?).map_err(map_err(name))?;
    for k in &gone {
        let _ = m.remove(&key(k));
    }
    for (k, bits) in &changed {
        m.insert(&key(k), *bits, 0).map_err(map_err(name))?;
    }
    Ok(gone.len() + changed.len())
}

/// Runs `fill` on slot `generation`'s half of a `BPF_F_MMAPABLE` array that holds `half`
/// elements per slot, through a memory mapping. Array elements are 8-byte aligned in the kernel,
/// so each element is one `u64` word here (a `u32` value sits in its low half). One copy instead
/// of a syscall per element.
pub(crate) fn with_mapped_half(
    ebpf: &mut Ebpf,
    name: &str,
    generation: u8,
    half: usize,
    fill: impl FnOnce(&mut [u64]),
) -> Result<(), DataplaneError> {
    let fd = match map(ebpf, name)? {
        Map::Array(d) => d.fd().as_fd().as_raw_fd(),
        _ => {
            return Err(DataplaneError::MapKind {
                map: name.to_owned(),
                expected: "an array",
            });
        }
    };
    let entries = half * anypop_common::layout::GENERATIONS as usize;
    let len = entries * 8;
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(DataplaneError::Mmap {
            map: name.to_owned(),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: the mapping is `len` bytes, page aligned, and only this process writes the
    // standby part of it; the program reads the live part concurrently.
    let words = unsafe { std::slice::from_raw_parts_mut(base as *mut u64, entries) };
    let start = generation as usize * half;
    fill(&mut words[start..start + half]);
    unsafe { libc::munmap(base, len) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delta_of_a_trie_is_what_differs() {
        let old = [(1u32, 1u64), (2, 2), (3, 3)];
        let new = [(1u32, 1u64), (3, 4), (5, 5)];
        let (gone, changed) = trie_delta(Some(&old), &new);
        assert_eq!(gone, vec![2]);
        assert_eq!(changed, vec![(3, 4), (5, 5)]);
        let (gone, changed) = trie_delta(None, &new);
        assert!(gone.is_empty());
        assert_eq!(changed, new.to_vec());
        assert_eq!(trie_delta(Some(&new), &new), (vec![], vec![]));
    }
}
