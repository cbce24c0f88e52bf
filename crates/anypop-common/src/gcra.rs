//! Token-bucket arithmetic in its GCRA form (generic cell rate algorithm).
//!
//! A bucket is one timestamp, the *theoretical arrival time* (TAT): the moment the bucket would
//! be full again if nothing else arrived. A packet costing `cost_ns` is allowed when the bucket
//! still has room: `max(tat, now) + cost_ns - now <= depth_ns`. One `u64` per limit means the
//! kernel can update it with a single compare-and-swap, so buckets shared by all CPUs stay exact.

/// Nanoseconds per second.
pub const NS_PER_SEC: u64 = 1_000_000_000;

/// Fixed-point shift for the per-byte cost (ns per byte × 2^BYTE_COST_SHIFT), so that multi-gigabit
/// limits (well under 1 ns per byte) keep their precision.
pub const BYTE_COST_SHIFT: u32 = 16;

/// Outcome of offering one packet to a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gcra {
    /// Allowed; store this as the new TAT.
    Allow(u64),
    /// Over the limit; leave the TAT as it was.
    Deny,
}

/// Offers a packet that costs `cost_ns` to a bucket whose depth is `depth_ns`.
#[inline(always)]
pub fn offer(tat: u64, now: u64, cost_ns: u64, depth_ns: u64) -> Gcra {
    let base = if tat > now { tat } else { now };
    let new_tat = base.saturating_add(cost_ns);
    if new_tat - now <= depth_ns {
        Gcra::Allow(new_tat)
    } else {
        Gcra::Deny
    }
}

/// Cost in ns of one packet under a packets-per-second limit.
pub const fn packet_cost_ns(pps: u64) -> u64 {
    match NS_PER_SEC.checked_div(pps) {
        Some(c) => c,
        None => u64::MAX,
    }
}

/// Fixed-point cost in ns per byte (shifted by [`BYTE_COST_SHIFT`]) under a bits-per-second limit.
pub const fn byte_cost_fixed(bps: u64) -> u64 {
    match ((8 * NS_PER_SEC) << BYTE_COST_SHIFT).checked_div(bps) {
        Some(c) => c,
        None => u64::MAX,
    }
}

/// Cost in ns of a packet of `len` bytes at a fixed-point per-byte cost.
#[inline(always)]
pub fn bytes_cost_ns(len: u64, byte_cost_fixed: u64) -> u64 {
    // No saturating_mul: its 128-bit overflow check has no BPF lowering. Packet lengths are
    // below 2^16, so only absurd per-byte costs need the explicit cap.
    if byte_cost_fixed >= (1 << 47) {
        return u64::MAX >> BYTE_COST_SHIFT;
    }
    (len & 0xffff).wrapping_mul(byte_cost_fixed) >> BYTE_COST_SHIFT
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `n` packets evenly over `secs` seconds and counts how many pass.
    fn allowed_over(pps_limit: u64, burst_s: f64, offered_pps: u64, secs: u64) -> u64 {
        let cost = packet_cost_ns(pps_limit);
        let depth = (burst_s * NS_PER_SEC as f64) as u64;
        let mut tat = 0;
        let mut ok = 0;
        let step = NS_PER_SEC / offered_pps;
        let start = 10 * NS_PER_SEC;
        for i in 0..offered_pps * secs {
            if let Gcra::Allow(t) = offer(tat, start + i * step, cost, depth) {
                tat = t;
                ok += 1;
            }
        }
        ok
    }

    #[test]
    fn under_the_limit_everything_passes() {
        assert_eq!(allowed_over(300, 2.0, 200, 10), 2000);
    }

    #[test]
    fn over_the_limit_passes_rate_plus_burst() {
        // 1000 pps offered against 300 pps with a 2 s burst for 10 s: 3000 + ~600 burst.
        let ok = allowed_over(300, 2.0, 1000, 10);
        assert!((3550..=3620).contains(&ok), "allowed {ok}");
    }

    #[test]
    fn a_burst_drains_then_refills() {
        let cost = packet_cost_ns(100);
        let depth = NS_PER_SEC; // one second's worth: 100 packets
        let now = 5 * NS_PER_SEC;
        let mut tat = 0;
        let mut ok = 0;
        for _ in 0..500 {
            if let Gcra::Allow(t) = offer(tat, now, cost, depth) {
                tat = t;
                ok += 1;
            }
        }
        assert_eq!(ok, 100, "a full bucket holds exactly its depth");
        // Half a second later, half the bucket is back.
        let later = now + NS_PER_SEC / 2;
        let mut ok2 = 0;
        for _ in 0..500 {
            if let Gcra::Allow(t) = offer(tat, later, cost, depth) {
                tat = t;
                ok2 += 1;
            }
        }
        assert_eq!(ok2, 50);
    }

    #[test]
    fn byte_limits_use_fixed_point() {
        // 4 Mbit/s = 500,000 bytes/s = 2000 ns per byte.
        let f = byte_cost_fixed(4_000_000);
        assert_eq!(bytes_cost_ns(1, f), 2000);
        assert_eq!(bytes_cost_ns(1500, f), 3_000_000);
        // 10 Gbit/s = 0.8 ns per byte: a 1500-byte packet costs 1200 ns (within the fixed-point
        // rounding of one ns).
        let f = byte_cost_fixed(10_000_000_000);
        assert!((1199..=1200).contains(&bytes_cost_ns(1500, f)));
    }
}
