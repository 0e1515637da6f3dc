//! Durations on the command line: `250ms`, `5s`, `2m`, `1h`, `1500us`, or a plain number of
//! milliseconds (what every `--*-ms` flag took before units were accepted, so old scripts
//! keep working). One parser for every flag that takes a duration.

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
}
