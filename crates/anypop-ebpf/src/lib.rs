//! What every anypop kernel program shares: header parsing ([`parse`]), Internet checksums
//! ([`csum`]), per-CPU verdict counters ([`counters`]), the panic handler and the license
//! ([`license!`]). The programs themselves are the crate's binaries (`src/bin/`): `edge` (a
//! POP), `backend` (`decap` and `dsr`), `trafficgen` (the lab's flood) and `baseline` (the
//! benchmarks' floor).
//!
//! Everything here that a program calls per packet is `#[inline(always)]`: a BPF-to-BPF call
//! costs more than most of these helpers (see the verifier notes in docs/ARCHITECTURE.md).
#![no_std]

pub mod counters;
pub mod csum;
pub mod parse;

/// Zeroes with one 8-byte store per word. Volatile, so LLVM cannot fuse the stores into a
/// `memset` call — which for BPF is a byte-at-a-time loop. Keys and other structs the programs
/// build are backed by such words (`#[repr(C, align(8))]` arrays of `u64`).
#[inline(always)]
pub fn zero_words<const N: usize>(w: &mut [u64; N]) {
    let p = w.as_mut_ptr();
    let mut i = 0;
    while i < N {
        unsafe { core::ptr::write_volatile(p.add(i), 0) };
        i += 1;
    }
}

/// The one panic handler of every program (each binary links this library once). It only
/// satisfies `no_std`: the verifier would refuse its endless loop, so no path of a loaded
/// program can reach it.
#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The program's license, in the `license` section the kernel reads from each object: GPL,
/// which the kernel requires of programs calling GPL-only helpers such as `bpf_fib_lookup`.
/// Invoke once at the root of every program.
#[macro_export]
macro_rules! license {
    () => {
        #[unsafe(link_section = "license")]
        #[unsafe(no_mangle)]
        static LICENSE: [u8; 4] = *b"GPL\0";
    };
}
