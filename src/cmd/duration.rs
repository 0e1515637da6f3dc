//! Durations on the command line: `250ms`, `5s`, `2m`, `1h`, `1500us`, or a plain number of
//! milliseconds (what every `--*-ms` flag took before units were accepted, so old scripts
//! keep working). One parser for every flag that takes a duration, [`parse_duration`], and
//! [`ms`], which every such flag names as its clap `value_parser`: it also refuses a value
//! outside the flag's range (clap names the flag, the message the limit) and one that is not
//! a whole number of milliseconds (the wire and the library count milliseconds: `1500us`
//! would be rounded one way or the other without saying so). A flag's value is a
//! `std::time::Duration`; it becomes the library's milliseconds where the command calls the
//! library ([`ms_u32`], [`ms_u64`]).

use std::time::Duration;

/// Parses `text` as a duration (see the module docs). The error names what was wrong, for
/// clap to print after the flag's name.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    if number.is_empty() {
        return Err(format!(
            "`{text}` is not a duration: write a whole number with a unit, as 250ms, 5s, 2m or \
             1h (a bare number is milliseconds)"
        ));
    }
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{number}` is too large for a duration"))?;
    let micros_per_unit: u64 = match unit.trim() {
        "" | "ms" => 1_000,
        "us" | "µs" => 1,
        "s" => 1_000_000,
        "m" | "min" => 60_000_000,
        "h" => 3_600_000_000,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`: use us, ms, s, m or h"
            ))
        }
    };
    value
        .checked_mul(micros_per_unit)
        .map(Duration::from_micros)
        .ok_or_else(|| format!("`{text}` is too large for a duration"))
}

/// The clap `value_parser` of a duration flag whose value lies in `MIN_MS..=MAX_MS`
/// milliseconds: [`parse_duration`], then the range and whole milliseconds checked.
pub fn ms<const MIN_MS: u64, const MAX_MS: u64>(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    let text = text.trim();
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!(
            "`{text}` is not a whole number of milliseconds (the finest the service counts)"
        ));
    }
    let (min, max) = (Duration::from_millis(MIN_MS), Duration::from_millis(MAX_MS));
    if d > max {
        return Err(format!("`{text}` is above the maximum of {}", with_ms(max)));
    }
    if d < min {
        return Err(format!("`{text}` is below the minimum of {}", with_ms(min)));
    }
    Ok(d)
}

/// The most milliseconds a `u32` field of the wire holds (about 49.7 days).
pub const U32_MS: u64 = u32::MAX as u64;

/// `d` in the largest unit that says it exactly (`5s`, `250ms`, `2m`, `1h`), as a flag takes
/// it: for defaults in `--help` and for messages.
pub fn format(d: Duration) -> String {
    let micros = d.as_micros();
    let units = [
        (3_600_000_000, "h"),
        (60_000_000, "m"),
        (1_000_000, "s"),
        (1_000, "ms"),
    ];
    for (per, unit) in units {
        if micros >= per && micros % per == 0 {
            return format!("{}{unit}", micros / per);
        }
    }
    if micros == 0 {
        "0ms".to_string()
    } else {
        format!("{micros}us")
    }
}

/// `d` as [`format`] says it, with its milliseconds when that is another unit (`5m (300000
/// ms)`), for a limit that the library and the docs state in ms.
pub fn with_ms(d: Duration) -> String {
    let shown = format(d);
    if shown.ends_with("ms") {
        shown
    } else {
        format!("{shown} ({} ms)", d.as_millis())
    }
}

/// A flag's value as the `u32` milliseconds of the wire and the library; its parser ([`ms`]
/// with a maximum of at most [`U32_MS`]) made sure it fits.
pub fn ms_u32(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).expect("the flag's parser bounds it to u32 milliseconds")
}

/// A flag's value as `u64` milliseconds (its parser bounds it to `u64` milliseconds).
pub fn ms_u64(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).expect("the flag's parser bounds it to u64 milliseconds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_bare_milliseconds() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("250ms"), Ok(ms(250)));
        assert_eq!(parse_duration("250"), Ok(ms(250)));
        assert_eq!(parse_duration("5s"), Ok(ms(5_000)));
        assert_eq!(parse_duration("2m"), Ok(ms(120_000)));
        assert_eq!(parse_duration("1h"), Ok(ms(3_600_000)));
        assert_eq!(parse_duration("1500us"), Ok(Duration::from_micros(1_500)));
        assert_eq!(parse_duration(" 7s "), Ok(ms(7_000)));
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        assert!(parse_duration("").unwrap_err().contains("not a duration"));
        assert!(parse_duration("s").unwrap_err().contains("not a duration"));
        assert!(parse_duration("-5s")
            .unwrap_err()
            .contains("not a duration"));
        assert!(parse_duration("5 fortnights")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_duration("1.5s").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("99999999999999999999")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_duration("18446744073709551615h")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn a_flags_range_and_whole_milliseconds() {
        let ms = Duration::from_millis;
        assert_eq!(super::ms::<10, 60_000>("1m"), Ok(ms(60_000)));
        assert_eq!(super::ms::<10, 60_000>("10"), Ok(ms(10)));
        assert_eq!(
            super::ms::<10, 60_000>("2m").unwrap_err(),
            "`2m` is above the maximum of 1m (60000 ms)"
        );
        assert_eq!(
            super::ms::<10, 60_000>("5ms").unwrap_err(),
            "`5ms` is below the minimum of 10ms"
        );
        assert!(super::ms::<0, U32_MS>("1500us")
            .unwrap_err()
            .contains("whole number of milliseconds"));
        assert_eq!(super::ms::<0, U32_MS>("2000us"), Ok(ms(2)));
        assert!(super::ms::<0, U32_MS>("50d").unwrap_err().contains("unit"));
        assert!(super::ms::<0, U32_MS>("4294967296")
            .unwrap_err()
            .contains("above the maximum of 4294967295ms"));
    }

    #[test]
    fn formats_in_the_largest_exact_unit() {
        let ms = Duration::from_millis;
        assert_eq!(format(ms(30_000)), "30s");
        assert_eq!(format(ms(300_000)), "5m");
        assert_eq!(format(ms(3_600_000)), "1h");
        assert_eq!(format(ms(1_500)), "1500ms");
        assert_eq!(format(ms(0)), "0ms");
        assert_eq!(format(Duration::from_micros(1_500)), "1500us");
        assert_eq!(with_ms(ms(300_000)), "5m (300000 ms)");
        assert_eq!(with_ms(ms(150)), "150ms");
        // What format prints, the parser reads back.
        for d in [ms(30_000), ms(1_500), ms(0), Duration::from_micros(7)] {
            assert_eq!(parse_duration(&format(d)), Ok(d));
        }
    }
}
