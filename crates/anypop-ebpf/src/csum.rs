//! The Internet checksum (RFC 1071) over 16-bit words summed into a `u32`.

/// The ones'-complement sum of the words summed into `sum` (carries folded in, twice: enough
/// for any sum of up to 65,537 words).
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The checksum field for a header whose words (checksum field 0) sum to `sum`.
#[inline(always)]
pub fn checksum(sum: u32) -> u16 {
    !fold(sum)
}
