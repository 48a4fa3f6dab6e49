//! RFC 3339 timestamps as the runtimes write them: `2024-11-28T06:12:13.123456789Z`, a fraction
//! of any width (or none), `Z` or a numeric offset. Parsed by hand into UTC nanoseconds: one
//! fixed layout, so a dozen integer operations beat a general date library on the hot path.
//!
//! The lines of a file come in bursts within one second, so the date and time of day
//! (`YYYY-MM-DDTHH:MM:SS`, 19 bytes) of the last timestamp parsed on a thread are kept with
//! their value: a line of the same second compares 19 bytes instead of checking and converting
//! six fields (perf, CRI → file sink: the conversion was 4% of vigil's CPU). Thread-local so
//! that the parsers stay plain functions; each tailer thread has its own.

use std::cell::Cell;

/// The last `YYYY-MM-DDTHH:MM:SS` that was valid, as three words (bytes 0..8, 8..16, 15..19),
/// and its seconds since the epoch (before the offset). Separate cells, read one word at a
/// time: copying one 27-byte tuple out of a `Cell` went through the stack and stalled on store
/// forwarding (perf showed it as most of the function). The initial zeros never match: a
/// timestamp has `-` at byte 4.
struct LastSecond {
    head: [Cell<u64>; 3],
    secs: Cell<i64>,
}

thread_local! {
    static LAST_SECOND: LastSecond =
        const { LastSecond { head: [Cell::new(0), Cell::new(0), Cell::new(0)], secs: Cell::new(0) } };
}

/// The 19 bytes of `YYYY-MM-DDTHH:MM:SS` as three words (the last two overlap by one byte).
fn head_words(b: &[u8]) -> [u64; 3] {
    let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    [word(0), word(8), u32::from_le_bytes(b[15..19].try_into().expect("4 bytes")) as u64]
}

/// Parses an RFC 3339 timestamp into UTC nanoseconds since the Unix epoch. Fraction digits
/// beyond 9 are dropped (truncated, as Go's parser does). `None` when `b` is not a timestamp.
pub fn parse_rfc3339(b: &[u8]) -> Option<i64> {
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let head = head_words(b);
    let cached = LAST_SECOND.with(|l| (l.head.iter().zip(head).all(|(c, w)| c.get() == w)).then(|| l.secs.get()));
    let local_secs = match cached {
        Some(secs) => secs,
        None => {
            let secs = date_time_secs(b)?;
            LAST_SECOND.with(|l| {
                for (c, w) in l.head.iter().zip(head) {
                    c.set(w);
                }
                l.secs.set(secs);
            });
            secs
        }
    };
    let mut i = 19;
    let mut nanos: i64 = 0;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        let mut scale = 100_000_000;
        while i < b.len() && b[i].is_ascii_digit() {
            nanos += (b[i] - b'0') as i64 * scale;
            scale /= 10;
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset_secs: i64 = match b.get(i)? {
        b'Z' | b'z' => {
            i += 1;
            0
        }
        sign @ (b'+' | b'-') => {
            let rest = b.get(i + 1..i + 6)?;
            if rest[2] != b':' {
                return None;
            }
            let oh = digits(&rest[0..2])? as i64;
            let om = digits(&rest[3..5])? as i64;
            if oh > 23 || om > 59 {
                return None;
            }
            i += 6;
            let o = oh * 3600 + om * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    if i != b.len() {
        return None;
    }
    (local_secs - offset_secs).checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// The seconds since the epoch of `YYYY-MM-DDTHH:MM:SS` (the first 19 bytes of `b`, separators
/// already checked), or `None` when a field is not a valid number.
fn date_time_secs(b: &[u8]) -> Option<i64> {
    let year = digits(&b[0..4])? as i64;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])? as i64;
    let min = digits(&b[14..16])? as i64;
    let sec = digits(&b[17..19])? as i64;
    // Leap second 60 is accepted as in Go (it normalizes to the next minute).
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec)
}

fn digits(b: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as u32;
    }
    Some(v)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table() {
        let cases: &[(&str, Option<i64>)] = &[
            ("1970-01-01T00:00:00Z", Some(0)),
            ("2026-11-28T06:12:13.123456789Z", Some(1_795_846_333_123_456_789)),
            ("2026-11-28T06:12:13.2Z", Some(1_795_846_333_200_000_000)),
            ("2026-11-28T06:12:13Z", Some(1_795_846_333_000_000_000)),
            // CRI-O: 9 digits and a numeric offset.
            ("2026-11-28T07:12:13.123456789+01:00", Some(1_795_846_333_123_456_789)),
            ("2026-11-28T01:12:13.123456789-05:00", Some(1_795_846_333_123_456_789)),
            ("2026-11-28T06:12:13.123456789+00:00", Some(1_795_846_333_123_456_789)),
            // More than 9 digits: truncated.
            ("2026-11-28T06:12:13.1234567891Z", Some(1_795_846_333_123_456_789)),
            ("2024-02-29T00:00:00Z", Some(1_709_164_800_000_000_000)),
            ("2023-02-29T00:00:00Z", None),
            ("2026-11-28T06:12:13.Z", None),
            ("2026-11-28T06:12:13", None),
            ("2026-11-28T06:12:13+0100", None),
            ("2026-13-28T06:12:13Z", None),
            ("2026-11-28T24:12:13Z", None),
            ("2026-11-28T06:12:13Zjunk", None),
            ("not a timestamp at all", None),
            ("", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_rfc3339(s.as_bytes()), *want, "{s}");
        }
    }

    proptest! {
        #[test]
        fn agrees_with_chrono(secs in 0i64..4_102_444_800, nanos in 0u32..1_000_000_000, off_min in -1439i32..1439, width in 0usize..10) {
            let offset = chrono::FixedOffset::east_opt(off_min * 60).unwrap();
            let dt = chrono::DateTime::from_timestamp(secs, nanos).unwrap().with_timezone(&offset);
            let frac = format!("{:09}", nanos);
            let s = if width == 0 {
                dt.format("%Y-%m-%dT%H:%M:%S%:z").to_string()
            } else {
                format!("{}.{}{}", dt.format("%Y-%m-%dT%H:%M:%S"), &frac[..width], dt.format("%:z"))
            };
            let truncated = if width == 0 { 0 } else { frac[..width].parse::<i64>().unwrap() * 10i64.pow(9 - width as u32) };
            prop_assert_eq!(parse_rfc3339(s.as_bytes()), Some(secs * 1_000_000_000 + truncated));
        }

        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = parse_rfc3339(&b);
        }

        /// The per-second cache never changes an answer: timestamps that share the date and
        /// time of day (valid or not) but differ in fraction, offset or trailing bytes parse
        /// as they do with the cache cleared, whatever was parsed before them.
        #[test]
        fn cached_second_gives_the_uncached_answer(
            heads in proptest::collection::vec(prop_oneof![
                Just("2026-11-28T06:12:13".to_string()),
                Just("2024-02-29T23:59:60".to_string()),
                Just("2023-02-29T00:00:00".to_string()),
                Just("2026-11-28T24:00:00".to_string()),
                "20[0-9]{2}-[01][0-9]-[0-3][0-9][Tt ][0-2][0-9]:[0-5][0-9]:[0-6][0-9]",
            ], 1..4),
            tails in proptest::collection::vec(prop_oneof![
                Just("Z".to_string()),
                Just(".5Z".to_string()),
                Just(".123456789+01:00".to_string()),
                Just(".Z".to_string()),
                Just("Zjunk".to_string()),
                "(\\.[0-9]{1,12})?(Z|z|[+-][0-2][0-9]:[0-5][0-9])",
            ], 1..6),
        ) {
            for (i, tail) in tails.iter().enumerate() {
                let s = format!("{}{tail}", heads[i % heads.len()]);
                let cached = parse_rfc3339(s.as_bytes());
                LAST_SECOND.with(|l| l.head.iter().for_each(|c| c.set(0)));
                prop_assert_eq!(cached, parse_rfc3339(s.as_bytes()), "{}", s);
            }
        }
    }
}
