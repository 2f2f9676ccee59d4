//! Times in JSON: RFC 3339 in UTC with exactly three fractional digits
//! (`2024-05-01T12:00:00.250Z`), converted from and to the milliseconds since
//! the Unix epoch that the store and the wire protocol use.
//!
//! The admin CLI prints times the same way, so it uses these too.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// 0000-01-01T00:00:00.000Z: the earliest time a four-digit year can show.
const MIN_MS: i64 = -62_167_219_200_000;
/// 9999-12-31T23:59:59.999Z: the latest.
const MAX_MS: i64 = 253_402_300_799_999;

/// `ms` since the epoch as RFC 3339 UTC with milliseconds. Times beyond the
/// four-digit years are clamped to the nearest one (they cannot come from a
/// valid device; the raw ms is shown beside them where it matters).
pub fn format_ms(ms: i64) -> String {
    let ms = ms.clamp(MIN_MS, MAX_MS);
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        // Unreachable after the clamp; a number is still better than a panic.
        .unwrap_or_else(|| ms.to_string())
}

/// An RFC 3339 time (any offset, any precision) as ms since the epoch,
/// rounded down to the millisecond; None when unparsable.
///
/// A space where the offset's `+` belongs is accepted: an unencoded `+` in a
/// query string decodes to a space.
pub fn parse_ms(text: &str) -> Option<i64> {
    let parsed = OffsetDateTime::parse(text, &Rfc3339).or_else(|_| {
        // Only the offset position: `...:00 02:00` -> `...:00+02:00`.
        match text.rfind(' ') {
            Some(i) if i >= 19 => {
                let mut fixed = text.to_owned();
                fixed.replace_range(i..=i, "+");
                OffsetDateTime::parse(&fixed, &Rfc3339)
            }
            _ => OffsetDateTime::parse(text, &Rfc3339),
        }
    });
    let nanos = parsed.ok()?.unix_timestamp_nanos();
    i64::try_from(nanos.div_euclid(1_000_000)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_milliseconds_in_utc() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(1_700_000_000_250), "2023-11-14T22:13:20.250Z");
        assert_eq!(format_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_ms(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_ms(i64::MIN), "0000-01-01T00:00:00.000Z");
    }

    #[test]
    fn parses_offsets_and_precision() {
        assert_eq!(
            parse_ms("2023-11-14T22:13:20.250Z"),
            Some(1_700_000_000_250)
        );
        assert_eq!(
            parse_ms("2023-11-15T00:13:20.2509+02:00"),
            Some(1_700_000_000_250)
        );
        assert_eq!(
            parse_ms("2023-11-15T00:13:20 02:00"),
            Some(1_700_000_000_000)
        );
        assert_eq!(parse_ms("1969-12-31T23:59:59.9995Z"), Some(-1));
        for bad in [
            "",
            "yesterday",
            "2023-11-14",
            "2023-11-14 22:13:20",
            "1700000000000",
        ] {
            assert_eq!(parse_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn round_trips() {
        for ms in [0, 1, 999, 1_700_000_000_123, -86_400_001] {
            assert_eq!(parse_ms(&format_ms(ms)), Some(ms));
        }
    }
}
