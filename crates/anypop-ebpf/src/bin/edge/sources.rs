//! The source-prefix dimension of the rules: the prefix sets a source belongs to (IPv4: the
//! DIR-24-8 table, the LPM trie only for /24s holding longer prefixes; IPv6: the trie) and the
//! rules that name them.
use anypop_common::layout::*;
use anypop_ebpf::parse::Packet;
use aya_ebpf::maps::lpm_trie::Key;

use crate::maps::{SET_TBL, SRC_V4, SRC_V6, SRC4_CLASS, SRC4_DIR};

/// The DIR-24-8 class of an IPv4 source (network byte order): one array read.
#[inline(always)]
pub fn source_class_v4(generation: u32, src: u32) -> u64 {
    let slash24 = u32::from_be(src) >> 8;
    match SRC4_DIR.get((generation << DIR_WORDS_BITS) | dir_word(slash24)) {
        Some(w) => dir_class(*w, slash24),
        None => 0,
    }
}

/// Longest-prefix match of an IPv4 source whose /24 holds longer prefixes.
#[inline(always)]
fn source_sets_v4_lpm(generation: u32, pkt: &Packet) -> u64 {
    let mut k = LpmKeyWords { w: [0; 3] };
    // prefix_len (u32) | generation (u8) | address (4 bytes) | padding
    k.w[0] = (8 + 32) as u64
        | ((generation as u64 & 0xff) << 32)
        | ((pkt.src[0] as u64 & 0xff_ffff) << 40);
    k.w[1] = (pkt.src[0] >> 24) as u64;
    let key = &k as *const LpmKeyWords as *const Key<LpmData4>;
    match SRC_V4.get(unsafe { &*key }) {
        Some(v) => *v,
        None => 0,
    }
}

/// Backing store for LPM keys (4-byte prefix length + data, at most 24 bytes).
#[repr(C, align(8))]
struct LpmKeyWords {
    w: [u64; 3],
}

/// The source-prefix dimension of the rules: one LPM lookup gives the prefix sets the source
/// belongs to, and at most 8 table reads turn those into the rules that name them.
#[inline(always)]
pub fn source_rules(generation: u32, gs: u32, pkt: &Packet) -> u64 {
    // IPv4: the DIR-24-8 array answers in two reads; the trie only for /24s that hold longer
    // prefixes. IPv6: the trie. (LPM keys are built in 8-byte-aligned words with explicit
    // stores: a byte array would be zeroed and filled by byte loops, BPF having no memset.)
    let sets = if pkt.family == FAMILY_V4 {
        let class = source_class_v4(generation, pkt.src[0]);
        if class == 0 {
            0
        } else if class != CLASS_USE_LPM {
            match SRC4_CLASS.get(generation * CLASSES + class as u32) {
                Some(v) => *v,
                None => 0,
            }
        } else {
            source_sets_v4_lpm(generation, pkt)
        }
    } else {
        let mut k = LpmKeyWords { w: [0; 3] };
        let b = &mut k as *mut LpmKeyWords as *mut u8;
        unsafe {
            core::ptr::write_unaligned(b as *mut u32, 8 + 128);
            *b.add(4) = generation as u8;
            core::ptr::write_unaligned(b.add(5) as *mut [u32; 4], pkt.src);
        }
        let key = &k as *const LpmKeyWords as *const Key<LpmData6>;
        match SRC_V6.get(unsafe { &*key }) {
            Some(v) => *v,
            None => 0,
        }
    };
    // Most networks have at most 8 prefix sets: one table read.
    if sets >> 8 == 0 {
        return match SET_TBL.get(set_table_index(gs, 0, sets as u32)) {
            Some(r) if sets != 0 => *r,
            _ => 0,
        };
    }
    let mut rules = 0u64;
    let mut chunk = 0u32;
    while chunk < SET_CHUNKS {
        let byte = ((sets >> (chunk * 8)) & 0xff) as u32;
        if byte != 0 {
            if let Some(r) = SET_TBL.get(set_table_index(gs, chunk, byte)) {
                rules |= *r;
            }
        }
        chunk += 1;
    }
    rules
}
