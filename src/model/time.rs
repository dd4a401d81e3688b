//! Wall-clock times as the dialects write and read them: RFC 3339 in UTC
//! with milliseconds (`2021-03-05T16:09:52.655Z`), and the civil-calendar
//! arithmetic under it (proleptic Gregorian, no time-zone database).
//! Plain functions, no I/O; shared by every dialect that shows times as
//! strings.

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// Days since 1970-01-01 → (year, month, day). (H. Hinnant's algorithm.)
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day) → days since 1970-01-01.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` (a real calendar day) → days since 1970-01-01.
pub fn parse_day(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = &s[r];
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (y, m, d) = (i64::from(num(0..4)?), num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&m) || d == 0 {
        return None;
    }
    let days = days_from_civil(y, m, d);
    // Day 31 of a 30-day month comes back as another date.
    (civil_from_days(days) == (y, m, d)).then_some(days)
}

/// Unix ms → `2026-11-21T10:00:00.123Z`.
pub fn rfc3339(ms: u64) -> String {
    let days = (ms / DAY_MS as u64) as i64;
    let in_day = ms % DAY_MS as u64;
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    if !(0..=9999).contains(&y) {
        return format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z");
    }
    // Digits written in place: every message shown and every audit
    // record carries one, and `format!` costs several times this.
    let mut b = *b"0000-00-00T00:00:00.000Z";
    for (at, width, v) in [
        (0, 4, y as u64),
        (5, 2, u64::from(mo)),
        (8, 2, u64::from(d)),
        (11, 2, h),
        (14, 2, mi),
        (17, 2, s),
        (20, 3, milli),
    ] {
        let mut v = v;
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    String::from_utf8(b.to_vec()).expect("ASCII digits")
}

/// An RFC 3339 date-time → Unix ms (negative before 1970), compared in
/// milliseconds: digits of the fraction past the third are dropped
/// (truncated, never rounded up). Takes `T`/`t` (or a space) between date
/// and time, `Z`/`z` or a `±HH:MM` offset. A leap second (`:60`) counts
/// as the last millisecond of its minute. `None` for anything else,
/// including dates that do not exist (`2021-02-30`).
///
/// A `+` offset sent unescaped in a query string arrives as a space; a
/// space where the offset's sign belongs is therefore read as `+`.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        part.iter()
            .try_fold(0u32, |acc, c| Some(acc * 10 + u32::from(c - b'0')))
    };
    let sep = |i: usize, ok: &[u8]| b.get(i).is_some_and(|c| ok.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (y, mo, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (h, mi, sec) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&mo) || d == 0 || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(i64::from(y), mo, d);
    if civil_from_days(days) != (i64::from(y), mo, d) {
        return None;
    }
    let mut i = 19;
    let mut milli = 0u32;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        let mut end = start;
        while b.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
        if end == start {
            return None;
        }
        for k in 0..3 {
            let digit = if start + k < end {
                u32::from(b[start + k] - b'0')
            } else {
                0
            };
            milli = milli * 10 + digit;
        }
        i = end;
    }
    let offset_min: i64 = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-' | b' ') if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (digits(i + 1..i + 3)?, digits(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let m = i64::from(oh * 60 + om);
            if *sign == b'-' {
                -m
            } else {
                m
            }
        }
        _ => return None,
    };
    let (sec, milli) = if sec == 60 { (59, 999) } else { (sec, milli) };
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + sec) - offset_min * 60;
    Some(secs * 1000 + i64::from(milli))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_has_milliseconds_and_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_614_960_592_655), "2021-03-05T16:09:52.655Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(86_400_000 - 1), "1970-01-01T23:59:59.999Z");
        assert_eq!(rfc3339(4_102_444_800_000), "2100-01-01T00:00:00.000Z");
        // Past year 9999 the year takes five digits.
        assert_eq!(rfc3339(253_402_300_800_000), "10000-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn parse_reads_back_what_rfc3339_writes() {
        for ms in [
            0,
            1,
            999,
            1_614_960_592_655,
            951_782_400_000,
            4_102_444_799_999,
        ] {
            assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms as i64), "{ms}");
        }
    }

    #[test]
    fn parse_takes_offsets_fractions_and_lowercase() {
        let at = Some(1_614_960_592_655);
        assert_eq!(parse_rfc3339("2021-03-05T16:09:52.655Z"), at);
        assert_eq!(parse_rfc3339("2021-03-05t16:09:52.655z"), at);
        assert_eq!(parse_rfc3339("2021-03-05T18:09:52.655+02:00"), at);
        assert_eq!(parse_rfc3339("2021-03-05T15:39:52.655-00:30"), at);
        assert_eq!(parse_rfc3339("2021-03-05T18:09:52.655 02:00"), at);
        // Fractions: fewer digits pad, more digits truncate.
        assert_eq!(
            parse_rfc3339("2021-03-05T16:09:52.6Z"),
            Some(1_614_960_592_600)
        );
        assert_eq!(parse_rfc3339("2021-03-05T16:09:52.655999999Z"), at);
        assert_eq!(
            parse_rfc3339("2021-03-05T16:09:52Z"),
            Some(1_614_960_592_000)
        );
        assert_eq!(
            parse_rfc3339("1969-12-31T23:59:59.500Z"),
            Some(-500),
            "before 1970 is negative"
        );
        assert_eq!(
            parse_rfc3339("2016-12-31T23:59:60Z"),
            parse_rfc3339("2016-12-31T23:59:59.999Z")
        );
    }

    #[test]
    fn parse_refuses_what_is_not_an_rfc3339_date_time() {
        for bad in [
            "",
            "2021-03-05",
            "2021-03-05T16:09Z",
            "2021-03-05T16:09:52",
            "2021-03-05T16:09:52.Z",
            "2021-02-30T00:00:00Z",
            "2021-13-01T00:00:00Z",
            "2021-03-05T24:00:00Z",
            "2021-03-05T16:09:52+0200",
            "2021-03-05T16:09:52+02:00x",
            "2021-03-05T16:09:52Zjunk",
            "２０２１-03-05T16:09:52Z",
            "+021-03-05T16:09:52Z",
            "1614960592655",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn civil_days_round_trip_across_leap_years_and_centuries() {
        for days in (-800_000..800_000).step_by(97) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(days_from_civil(2000, 2, 29)), (2000, 2, 29));
        assert_eq!(civil_from_days(days_from_civil(1900, 2, 29)), (1900, 3, 1));
    }

    #[test]
    fn parse_day_takes_real_dates_only() {
        assert_eq!(parse_day("1970-01-02"), Some(1));
        assert_eq!(parse_day("2024-02-29"), Some(days_from_civil(2024, 2, 29)));
        for bad in [
            "2023-02-29",
            "2024-04-31",
            "2024-13-01",
            "2024-00-10",
            "2024-01-00",
            "2024-1-01",
            "24-01-01",
            "2024/01/01",
            "2024-01-01T00:00:00Z",
            "+024-01-01",
            "2024-01-+1",
            "today",
            "",
        ] {
            assert_eq!(parse_day(bad), None, "{bad}");
        }
    }
}
