//! The conf's `created` and `mtime` times, read as CPython 3.11's
//! `datetime.fromisoformat` reads them and written back as
//! `datetime.isoformat()` writes them (the image config hashes that text).
//!
//! `"now"` is the current UTC time with microseconds, as nixpkgs'
//! `datetime.now(tz=timezone.utc)`. A time without an offset is naive in
//! Python, and nixpkgs turns it into the layer mtime in the local time
//! zone: UTC inside the Nix sandbox (buildLayeredImage), but the user's
//! zone when streamLayeredImage's script runs on their machine, so the
//! layer digests would depend on where it runs. We always use UTC: the
//! same image everywhere, and the sandbox's.

use anyhow::{bail, Context, Result};

/// A parsed time: civil date and time plus an optional UTC offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsoTime {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    micro: u32,
    /// Offset east of UTC in microseconds; None for a naive time.
    offset_micros: Option<i64>,
}

impl IsoTime {
    /// Parses `"now"` or an ISO 8601 time; `now` supplies the current time.
    pub fn parse(text: &str, now: std::time::SystemTime) -> Result<IsoTime> {
        if text == "now" {
            return Ok(from_system(now));
        }
        parse_iso(text).with_context(|| format!("{text:?} is not an ISO 8601 time or \"now\""))
    }

    /// `datetime.isoformat()`.
    pub fn isoformat(&self) -> String {
        let mut s = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        );
        if self.micro != 0 {
            s.push_str(&format!(".{:06}", self.micro));
        }
        if let Some(off) = self.offset_micros {
            let sign = if off < 0 { '-' } else { '+' };
            let a = off.unsigned_abs();
            let (h, m, sec, us) = (
                a / 3_600_000_000,
                a / 60_000_000 % 60,
                a / 1_000_000 % 60,
                a % 1_000_000,
            );
            s.push_str(&format!("{sign}{h:02}:{m:02}"));
            if sec != 0 || us != 0 {
                s.push_str(&format!(":{sec:02}"));
            }
            if us != 0 {
                s.push_str(&format!(".{us:06}"));
            }
        }
        s
    }

    /// `int(dt.timestamp())`: seconds since the epoch, truncated toward zero.
    pub fn unix_seconds(&self) -> i64 {
        let days = days_from_civil(self.year, self.month, self.day);
        let local = ((days * 24 + i64::from(self.hour)) * 60 + i64::from(self.minute)) * 60
            + i64::from(self.second);
        let micros = local * 1_000_000 + i64::from(self.micro) - self.offset_micros.unwrap_or(0);
        micros / 1_000_000
    }
}

fn from_system(now: std::time::SystemTime) -> IsoTime {
    let micros = match now.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i64,
        Err(e) => -(e.duration().as_micros() as i64),
    };
    let secs = micros.div_euclid(1_000_000);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let tod = secs.rem_euclid(86_400) as u32;
    IsoTime {
        year,
        month,
        day,
        hour: tod / 3600,
        minute: tod / 60 % 60,
        second: tod % 60,
        micro: micros.rem_euclid(1_000_000) as u32,
        offset_micros: Some(0),
    }
}

/// A cursor over ASCII text.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn digits(&mut self, n: usize) -> Result<u32> {
        let part = self
            .s
            .get(self.i..self.i + n)
            .filter(|p| p.iter().all(u8::is_ascii_digit));
        let Some(part) = part else {
            bail!("expected {n} digits at position {}", self.i)
        };
        self.i += n;
        Ok(part.iter().fold(0, |acc, d| acc * 10 + u32::from(d - b'0')))
    }
    fn eat(&mut self, c: u8) -> bool {
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn at_end(&self) -> bool {
        self.i == self.s.len()
    }
    fn peek_digit(&self) -> bool {
        self.s.get(self.i).is_some_and(u8::is_ascii_digit)
    }
    /// `.ffffff` / `,ffffff`: any number of digits, cut to microseconds.
    fn fraction(&mut self) -> Result<u32> {
        if !(self.eat(b'.') || self.eat(b',')) {
            return Ok(0);
        }
        let start = self.i;
        while self.peek_digit() {
            self.i += 1;
        }
        if self.i == start {
            bail!("expected digits after the decimal point");
        }
        let mut digits: Vec<u8> = self.s[start..self.i.min(start + 6)].to_vec();
        digits.resize(6, b'0');
        Ok(digits
            .iter()
            .fold(0, |acc, d| acc * 10 + u32::from(d - b'0')))
    }
}

fn parse_iso(text: &str) -> Result<IsoTime> {
    if !text.is_ascii() {
        bail!("non-ASCII characters");
    }
    let mut c = Cursor {
        s: text.as_bytes(),
        i: 0,
    };
    let year = c.digits(4)?;
    let extended = c.eat(b'-');
    let month = c.digits(2)?;
    if extended && !c.eat(b'-') {
        bail!("expected '-' after the month");
    }
    let day = c.digits(2)?;
    let mut t = IsoTime {
        year: i64::from(year),
        month,
        day,
        hour: 0,
        minute: 0,
        second: 0,
        micro: 0,
        offset_micros: None,
    };
    if !c.at_end() {
        c.i += 1; // fromisoformat takes any single separator character
        parse_time(&mut c, &mut t)?;
    }
    if !c.at_end() {
        bail!("unexpected text at position {}", c.i);
    }
    check_ranges(&t)?;
    Ok(t)
}

/// `HH[:MM[:SS[.f]]]` or `HH[MM[SS[.f]]]`, then an optional offset.
fn parse_time(c: &mut Cursor, t: &mut IsoTime) -> Result<()> {
    t.hour = c.digits(2)?;
    let colon = c.eat(b':');
    if colon || c.peek_digit() {
        t.minute = c.digits(2)?;
        if (colon && c.eat(b':')) || (!colon && c.peek_digit()) {
            t.second = c.digits(2)?;
            t.micro = c.fraction()?;
        }
    }
    if c.eat(b'Z') {
        t.offset_micros = Some(0);
    } else if c.s.get(c.i).is_some_and(|&b| b == b'+' || b == b'-') {
        let negative = c.s[c.i] == b'-';
        c.i += 1;
        let h = i64::from(c.digits(2)?);
        let colon = c.eat(b':');
        let m = if colon || c.peek_digit() {
            i64::from(c.digits(2)?)
        } else {
            0
        };
        let s = if (colon && c.eat(b':')) || (!colon && c.peek_digit()) {
            i64::from(c.digits(2)?)
        } else {
            0
        };
        let us = i64::from(c.fraction()?);
        if h >= 24 || m >= 60 || s >= 60 {
            bail!("UTC offset out of range");
        }
        let off = ((h * 60 + m) * 60 + s) * 1_000_000 + us;
        t.offset_micros = Some(if negative { -off } else { off });
    }
    Ok(())
}

fn check_ranges(t: &IsoTime) -> Result<()> {
    if t.year < 1
        || !(1..=12).contains(&t.month)
        || t.day < 1
        || t.day > days_in_month(t.year, t.month)
    {
        bail!("date out of range");
    }
    if t.hour > 23 || t.minute > 59 || t.second > 59 {
        bail!("time out of range");
    }
    Ok(())
}

fn days_in_month(year: i64, month: u32) -> u32 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
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
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn iso(s: &str) -> (String, i64) {
        let t = IsoTime::parse(s, UNIX_EPOCH).unwrap();
        (t.isoformat(), t.unix_seconds())
    }

    #[test]
    fn nixpkgs_default_and_offsets() {
        assert_eq!(
            iso("1970-01-01T00:00:01Z"),
            ("1970-01-01T00:00:01+00:00".into(), 1)
        );
        assert_eq!(iso("2024-01-02T03:04:05Z").1, 1_704_164_645);
        assert_eq!(
            iso("2024-01-02T05:04:05+02:00"),
            ("2024-01-02T05:04:05+02:00".into(), 1_704_164_645)
        );
        assert_eq!(
            iso("2024-01-02 03:04:05.5-0130").0,
            "2024-01-02T03:04:05.500000-01:30"
        );
        assert_eq!(
            iso("20240102T030405"),
            ("2024-01-02T03:04:05".into(), 1_704_164_645)
        );
        assert_eq!(
            iso("2024-01-02"),
            ("2024-01-02T00:00:00".into(), 1_704_153_600)
        );
        assert_eq!(
            iso("1969-12-31T23:59:59.5Z").1,
            0,
            "truncated toward zero like int()"
        );
    }

    #[test]
    fn now_has_microseconds_and_utc() {
        let t = IsoTime::parse(
            "now",
            UNIX_EPOCH + Duration::from_micros(1_704_164_645_000_123),
        )
        .unwrap();
        assert_eq!(t.isoformat(), "2024-01-02T03:04:05.000123+00:00");
        assert!(
            IsoTime::parse("now", SystemTime::now())
                .unwrap()
                .unix_seconds()
                > 1_700_000_000
        );
    }

    #[test]
    fn bad_times_are_rejected() {
        for bad in [
            "",
            "yesterday",
            "2024-13-01",
            "2023-02-29",
            "2024-01-01T25:00",
            "2024-01-01T10:00Zx",
        ] {
            assert!(IsoTime::parse(bad, UNIX_EPOCH).is_err(), "{bad}");
        }
    }
}
