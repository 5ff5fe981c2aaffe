//! PostgreSQL's binary `numeric` format, both ways, from and to canonical decimal
//! text (never through a float).
//!
//! The format: `ndigits` (i16), `weight` (i16), `sign` (u16), `dscale` (u16), then
//! `ndigits` base-10000 digits (i16 each). The value is
//! `sum(digit[i] * 10000^(weight - i))`, shown with `dscale` fraction digits. The
//! sign is 0x0000 (positive), 0x4000 (negative), 0xC000 (NaN), 0xD000 (+Infinity) or
//! 0xF000 (-Infinity).

use bytes::{BufMut, BytesMut};
use pontoon_core::Decimal;

const POS: u16 = 0x0000;
const NEG: u16 = 0x4000;
const NAN: u16 = 0xC000;
const PINF: u16 = 0xD000;
const NINF: u16 = 0xF000;
/// PostgreSQL's largest display scale.
const MAX_DSCALE: usize = 0x3FFF;

fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// Decodes a binary numeric into canonical decimal text with exactly `dscale`
/// fraction digits (as PostgreSQL itself prints it).
pub fn decode(raw: &[u8]) -> Result<Decimal, String> {
    if raw.len() < 8 {
        return Err(format!("numeric value of {} bytes is too short", raw.len()));
    }
    let ndigits = be_u16(&raw[0..2]) as usize;
    let weight = be_u16(&raw[2..4]) as i16 as i64;
    let sign = be_u16(&raw[4..6]);
    let dscale = be_u16(&raw[6..8]) as usize;
    match sign {
        NAN => return Ok(special("NaN")),
        PINF => return Ok(special("Infinity")),
        NINF => return Ok(special("-Infinity")),
        POS | NEG => {}
        other => return Err(format!("numeric value has an unknown sign 0x{other:04x}")),
    }
    if raw.len() != 8 + 2 * ndigits {
        return Err(format!("numeric value of {} bytes does not hold its {ndigits} digits", raw.len()));
    }
    let digits: Vec<u16> = raw[8..].chunks_exact(2).map(be_u16).collect();
    if digits.iter().any(|d| *d >= 10_000) {
        return Err("numeric value has a digit out of range".into());
    }
    // the base-10000 digit with exponent `weight - j` sits at index j
    let digit_at = |j: i64| -> u16 { if j < 0 { 0 } else { digits.get(j as usize).copied().unwrap_or(0) } };
    let mut text = String::with_capacity(4 * (ndigits + 2) + dscale + 2);
    if sign == NEG {
        text.push('-');
    }
    if weight < 0 {
        text.push('0');
    } else {
        for j in 0..=weight {
            let d = digit_at(j);
            if j == 0 {
                text.push_str(&d.to_string());
            } else {
                text.push_str(&format!("{d:04}"));
            }
        }
    }
    if dscale > 0 {
        text.push('.');
        let mut frac = String::with_capacity(dscale + 4);
        let mut j = weight + 1;
        while frac.len() < dscale {
            frac.push_str(&format!("{:04}", digit_at(j)));
            j += 1;
        }
        frac.truncate(dscale);
        text.push_str(&frac);
    }
    Decimal::parse(&text).ok_or_else(|| "numeric value is not a number".to_string())
}

fn special(text: &str) -> Decimal {
    Decimal::parse(text).expect("NaN and the infinities parse")
}

/// Encodes a decimal as a binary numeric with `dscale` equal to its scale.
pub fn encode(d: &Decimal, out: &mut BytesMut) -> Result<(), String> {
    let sign = match d.as_str() {
        "NaN" => Some(NAN),
        "Infinity" => Some(PINF),
        "-Infinity" => Some(NINF),
        _ => None,
    };
    if let Some(sign) = sign {
        out.put_i16(0);
        out.put_i16(0);
        out.put_u16(sign);
        out.put_u16(0);
        return Ok(());
    }
    let (int, frac) = d.parts();
    if frac.len() > MAX_DSCALE {
        return Err(format!(
            "a decimal with {} fraction digits exceeds PostgreSQL's limit of {MAX_DSCALE}",
            frac.len()
        ));
    }
    let int = int.trim_start_matches('0');
    let int_groups = int.len().div_ceil(4);
    let frac_groups = frac.len().div_ceil(4);
    let mut groups: Vec<u16> = Vec::with_capacity(int_groups + frac_groups);
    // integer digits, left-padded to whole groups
    let lead = int_groups * 4 - int.len();
    let mut acc = 0u16;
    for (i, b) in int.bytes().enumerate() {
        acc = acc * 10 + (b - b'0') as u16;
        if (lead + i + 1) % 4 == 0 {
            groups.push(acc);
            acc = 0;
        }
    }
    // fraction digits, right-padded to whole groups
    let mut n = 0;
    for b in frac.bytes() {
        acc = acc * 10 + (b - b'0') as u16;
        n += 1;
        if n == 4 {
            groups.push(acc);
            acc = 0;
            n = 0;
        }
    }
    if n > 0 {
        for _ in n..4 {
            acc *= 10;
        }
        groups.push(acc);
    }
    let mut weight = int_groups as i64 - 1;
    let first = groups.iter().position(|g| *g != 0);
    let (start, end) = match first {
        Some(s) => {
            let e = groups.iter().rposition(|g| *g != 0).map_or(s, |e| e + 1);
            (s, e)
        }
        None => (0, 0),
    };
    weight -= start as i64;
    let digits = &groups[start..end];
    if digits.is_empty() {
        weight = 0;
    }
    if digits.len() > i16::MAX as usize || weight > i16::MAX as i64 || weight < i16::MIN as i64 {
        return Err("the decimal is too large for PostgreSQL's numeric".into());
    }
    let negative = d.is_negative() && !digits.is_empty();
    out.reserve(8 + 2 * digits.len());
    out.put_i16(digits.len() as i16);
    out.put_i16(weight as i16);
    out.put_u16(if negative { NEG } else { POS });
    out.put_u16(frac.len() as u16);
    for g in digits {
        out.put_u16(*g);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(text: &str) -> String {
        let d = Decimal::parse(text).unwrap();
        let mut buf = BytesMut::new();
        encode(&d, &mut buf).unwrap();
        decode(&buf).unwrap().as_str().to_string()
    }

    #[test]
    fn encodes_like_postgres() {
        // 12345.678 -> digits [1, 2345, 6780], weight 1, dscale 3
        let mut buf = BytesMut::new();
        encode(&Decimal::parse("12345.678").unwrap(), &mut buf).unwrap();
        assert_eq!(&buf[..], &[0, 3, 0, 1, 0, 0, 0, 3, 0, 1, 0x09, 0x29, 0x1a, 0x7c]);
        // 0.0001 -> digits [1], weight -1
        let mut buf = BytesMut::new();
        encode(&Decimal::parse("0.0001").unwrap(), &mut buf).unwrap();
        assert_eq!(&buf[..], &[0, 1, 0xff, 0xff, 0, 0, 0, 4, 0, 1]);
        // zero with scale 2: no digits
        let mut buf = BytesMut::new();
        encode(&Decimal::parse("0.00").unwrap(), &mut buf).unwrap();
        assert_eq!(&buf[..], &[0, 0, 0, 0, 0, 0, 0, 2]);
    }

    #[test]
    fn round_trips_exactly() {
        for t in [
            "0",
            "0.000",
            "1",
            "-1",
            "10000",
            "-10000.0001",
            "12345.678",
            "0.00000001",
            "-0.1",
            "99999999999999999999",
            "1234567890123456789012345678901234567890",
            "1234567890123456789012345678901234567.890",
            "0.100",
            "100000000.00000000",
            "NaN",
            "Infinity",
            "-Infinity",
        ] {
            assert_eq!(round_trip(t), t, "{t}");
        }
    }

    #[test]
    fn rejects_malformed_input() {
        assert!(decode(&[0, 1]).is_err());
        assert!(decode(&[0, 1, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(decode(&[0, 1, 0, 0, 0, 0, 0, 0, 0x27, 0x10]).is_err());
        assert!(decode(&[0, 0, 0, 0, 0x12, 0x34, 0, 0]).is_err());
    }
}
