//! UTC time formats without a date library: civil dates <-> days since the epoch (Howard Hinnant's
//! algorithms), `X-Amz-Date` (ISO 8601 basic), ISO 8601 extended and RFC 3339 with milliseconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Parses `yyyymmddThhmmssZ` (ISO 8601 basic, UTC), rejecting impossible dates and years before
/// 1970.
pub fn parse_amz_date(value: &str) -> Option<SystemTime> {
    let b = value.as_bytes();
    // ASCII first: the fields below are sliced by byte offsets.
    if !value.is_ascii() || b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = &value[range];
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())
            .flatten()
    };
    let (year, month, day) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hour, minute, second) = (num(9..11)?, num(11..13)?, num(13..15)?);
    let days = days_from_civil(year, month, day);
    if year < 1970
        || civil_from_days(days) != (year, month, day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

fn civil_parts(time: SystemTime) -> (i64, i64, i64, i64, i64, i64) {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    (year, month, day, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Writes the civil time of `time` in a fixed layout: `Y`, `M`, `D`, `h`, `m`, `s` stand for the
/// zero-padded year (4 digits), month, day, hour, minute, second (2 digits), `f` for milliseconds (3);
/// any other byte is copied. By hand rather than `format!`: these run for every request (the backend
/// signature, the audit line), and the formatting machinery cost more than the rest of the date.
fn write_layout(time: SystemTime, layout: &[u8]) -> String {
    let (y, mo, d, h, mi, s) = civil_parts(time);
    let millis = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_millis())
        .unwrap_or(0) as i64;
    let mut out = String::with_capacity(layout.len() + 2);
    for &c in layout {
        let (value, digits) = match c {
            b'Y' => (y, 4),
            b'M' => (mo, 2),
            b'D' => (d, 2),
            b'h' => (h, 2),
            b'm' => (mi, 2),
            b's' => (s, 2),
            b'f' => (millis, 3),
            other => {
                out.push(char::from(other));
                continue;
            }
        };
        // Years past 9999 keep every digit (as `{:04}` would).
        let value = value.max(0) as u64;
        let width = digits.max(value.checked_ilog10().unwrap_or(0) + 1);
        for i in (0..width).rev() {
            out.push(char::from(b'0' + (value / 10u64.pow(i) % 10) as u8));
        }
    }
    out
}

/// `yyyymmddThhmmssZ` (ISO 8601 basic, UTC), as in `X-Amz-Date`.
pub fn format_amz_date(time: SystemTime) -> String {
    write_layout(time, b"YMDThmsZ")
}

/// `yyyy-mm-ddThh:mm:ssZ` (ISO 8601 extended, UTC), as AWS shows `ServerTime` and `Expires` in
/// errors.
pub fn format_iso8601(time: SystemTime) -> String {
    write_layout(time, b"Y-M-DTh:m:sZ")
}

/// `yyyy-mm-ddThh:mm:ss.mmmZ` (RFC 3339, UTC, milliseconds), for audit lines.
pub fn format_rfc3339_millis(time: SystemTime) -> String {
    write_layout(time, b"Y-M-DTh:m:s.fZ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_and_formats() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        let t = UNIX_EPOCH + Duration::from_millis(1_714_564_800_123);
        assert_eq!(format_rfc3339_millis(t), "2024-05-01T12:00:00.123Z");
        assert_eq!(format_iso8601(t), "2024-05-01T12:00:00Z");
        assert_eq!(format_amz_date(t), "20240501T120000Z");
        let t = UNIX_EPOCH + Duration::from_millis(946_684_799_007);
        assert_eq!(format_rfc3339_millis(t), "1999-12-31T23:59:59.007Z");
        assert_eq!(format_amz_date(t), "19991231T235959Z");
        assert_eq!(format_amz_date(UNIX_EPOCH), "19700101T000000Z");
        // Past year 9999 every digit stays, as `format!("{:04}")` writes it.
        let far = UNIX_EPOCH + Duration::from_secs(253_402_300_800);
        assert_eq!(format_iso8601(far), "10000-01-01T00:00:00Z");
        // Every second of a day round-trips through the parser.
        for secs in (1_700_000_000..1_700_086_400).step_by(997) {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(parse_amz_date(&format_amz_date(t)), Some(t));
        }
    }
}
