//! The region's working-day calendar and the deadlines it gives a ladder's terms (DESIGN.md, "Time").
//!
//! A term of n working days that starts within working hours (09:00–17:00 on a working day) ends at
//! the same clock time on the n-th following working day. One that starts outside them ends at the
//! close of the n-th working day counting from the next working period, which is the same day when
//! it starts before the opening of a working day. Either way, n working days are n × 8 working
//! hours. Urgent terms are elapsed hours around the clock. All in the region's time zone
//! (Europe/Amsterdam by default), from the time-zone database compiled into the binary, so a
//! deadline does not depend on the machine it is computed on.

use std::collections::BTreeMap;
use std::time::SystemTime;

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};
use serde::Deserialize;

use crate::Invalid;

/// Longest term in working days (a year and a bit; a longer one is a typing error).
pub const MAX_WORKING_DAYS: u32 = 300;
/// Longest urgent term in hours (two weeks).
pub const MAX_HOURS: u32 = 14 * 24;

/// How often Liberation Day (5 May) is a day off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LiberationDay {
    /// Every year, as the municipal, police and government collective agreements have it.
    #[default]
    EveryYear,
    /// Only in years divisible by five (the national rule for many other sectors).
    EveryFifthYear,
}

/// A day the region adds to the calendar's days off.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraDayOff {
    /// The date, `YYYY-MM-DD`.
    pub date: String,
    /// What it is, as printed by `doorzetctl calendar`.
    pub name: String,
}

/// The calendar as a region configures it (`[calendar]` in its ladder file, or a file of its own).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CalendarConfig {
    /// IANA time zone.
    pub time_zone: String,
    /// Opening of a working day, `HH:MM`.
    pub opens: String,
    /// Close of a working day, `HH:MM`.
    pub closes: String,
    /// Whether Good Friday is a working day.
    pub good_friday_is_working_day: bool,
    /// How often Liberation Day is a day off.
    pub liberation_day: LiberationDay,
    /// The region's own days off.
    pub extra_days_off: Vec<ExtraDayOff>,
}

impl Default for CalendarConfig {
    fn default() -> Self {
        Self {
            time_zone: "Europe/Amsterdam".into(),
            opens: "09:00".into(),
            closes: "17:00".into(),
            good_friday_is_working_day: true,
            liberation_day: LiberationDay::EveryYear,
            extra_days_off: Vec::new(),
        }
    }
}

/// A term of a ladder's tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Term {
    /// Working days in the region's calendar.
    WorkingDays(u32),
    /// Elapsed hours around the clock (the urgent procedure).
    Hours(u32),
}

impl Term {
    /// Checks the term is within bounds; names `field`.
    pub fn validate(self, field: &'static str) -> Result<(), Invalid> {
        match self {
            Term::WorkingDays(n) if n == 0 || n > MAX_WORKING_DAYS => Err(Invalid::new(
                field,
                format!("must be 1 to {MAX_WORKING_DAYS} working days"),
            )),
            Term::Hours(n) if n == 0 || n > MAX_HOURS => Err(Invalid::new(
                field,
                format!("must be 1 to {MAX_HOURS} hours"),
            )),
            _ => Ok(()),
        }
    }
}

/// A day that is not a working day, with its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayOff {
    /// The date.
    pub date: Date,
    /// Its name (for a weekend day, the weekday).
    pub name: String,
}

/// The working-day calendar in force.
#[derive(Debug, Clone)]
pub struct Calendar {
    tz: TimeZone,
    opens: Time,
    closes: Time,
    good_friday_is_working_day: bool,
    liberation_day: LiberationDay,
    extra: BTreeMap<Date, String>,
}

impl Default for Calendar {
    fn default() -> Self {
        Self::new(&CalendarConfig::default()).expect("the default calendar is valid")
    }
}

/// Easter Sunday in the Gregorian calendar (the anonymous Gregorian algorithm).
pub fn easter_sunday(year: i16) -> Date {
    let y = i32::from(year);
    let a = y % 19;
    let b = y / 100;
    let c = y % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    // Month is 3 or 4 and day 1..=31 by construction.
    Date::new(year, month as i8, day as i8).expect("Easter is a date")
}

fn clock(field: &'static str, value: &str) -> Result<Time, Invalid> {
    value
        .parse::<Time>()
        .map_err(|_| Invalid::new(field, format!("`{value}` is not a clock time HH:MM")))
}

impl Calendar {
    /// Builds the calendar, naming the offending field.
    pub fn new(config: &CalendarConfig) -> Result<Self, Invalid> {
        let tz = TimeZone::get(&config.time_zone).map_err(|_| {
            Invalid::new(
                "time_zone",
                format!("`{}` is not an IANA time zone", config.time_zone),
            )
        })?;
        let opens = clock("opens", &config.opens)?;
        let closes = clock("closes", &config.closes)?;
        if closes <= opens {
            return Err(Invalid::new("closes", "must be later than `opens`"));
        }
        let mut extra = BTreeMap::new();
        for day in &config.extra_days_off {
            let date = day.date.parse::<Date>().map_err(|_| {
                Invalid::new(
                    "extra_days_off",
                    format!("`{}` is not a date YYYY-MM-DD", day.date),
                )
            })?;
            if day.name.trim().is_empty() {
                return Err(Invalid::new("extra_days_off", "every day needs a name"));
            }
            extra.insert(date, day.name.clone());
        }
        Ok(Self {
            tz,
            opens,
            closes,
            good_friday_is_working_day: config.good_friday_is_working_day,
            liberation_day: config.liberation_day,
            extra,
        })
    }

    /// The region's time zone.
    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    /// The public holidays and the region's own days off in `year` (weekends not listed), in order.
    pub fn holidays(&self, year: i16) -> Vec<DayOff> {
        let easter = easter_sunday(year);
        let shift = |days: i64| easter.checked_add(days.days()).expect("near Easter");
        let on = |m: i8, d: i8| Date::new(year, m, d).expect("a fixed holiday");
        let mut days = vec![(on(1, 1), "Nieuwjaarsdag".to_owned())];
        if !self.good_friday_is_working_day {
            days.push((shift(-2), "Goede Vrijdag".into()));
        }
        days.push((shift(1), "Tweede Paasdag".into()));
        let kings = if on(4, 27).weekday() == Weekday::Sunday {
            on(4, 26)
        } else {
            on(4, 27)
        };
        days.push((kings, "Koningsdag".into()));
        if self.liberation_day == LiberationDay::EveryYear || year % 5 == 0 {
            days.push((on(5, 5), "Bevrijdingsdag".into()));
        }
        days.push((shift(39), "Hemelvaartsdag".into()));
        days.push((shift(50), "Tweede Pinksterdag".into()));
        days.push((on(12, 25), "Eerste Kerstdag".into()));
        days.push((on(12, 26), "Tweede Kerstdag".into()));
        days.extend(
            self.extra
                .range(on(1, 1)..=on(12, 31))
                .map(|(d, n)| (*d, n.clone())),
        );
        days.sort_by_key(|(d, _)| *d);
        days.dedup_by_key(|(d, _)| *d);
        days.into_iter()
            .map(|(date, name)| DayOff { date, name })
            .collect()
    }

    /// Whether `date` is a working day.
    pub fn is_working_day(&self, date: Date) -> bool {
        !matches!(date.weekday(), Weekday::Saturday | Weekday::Sunday)
            && !self.holidays(date.year()).iter().any(|h| h.date == date)
    }

    fn next_working_day(&self, date: Date) -> Date {
        let mut d = date;
        loop {
            d = d.tomorrow().expect("within jiff's range");
            if self.is_working_day(d) {
                return d;
            }
        }
    }

    fn at(&self, date: Date, time: Time) -> Timestamp {
        // Compatible disambiguation: a clock time in a DST gap moves forward, in a fold takes the
        // earlier instant.
        date.to_datetime(time)
            .to_zoned(self.tz.clone())
            .expect("within jiff's range")
            .timestamp()
    }

    /// When a term that starts at `from` ends.
    pub fn due(&self, from: SystemTime, term: Term) -> Result<SystemTime, Invalid> {
        term.validate("term")?;
        let start = Timestamp::try_from(from)
            .map_err(|_| Invalid::new("from", "is outside the calendar's range"))?;
        let due = match term {
            Term::Hours(n) => start
                .checked_add(SignedDuration::from_hours(i64::from(n)))
                .map_err(|_| Invalid::new("from", "is outside the calendar's range"))?,
            Term::WorkingDays(n) => {
                let local = start.to_zoned(self.tz.clone());
                let (date, time) = (local.date(), local.time());
                if self.is_working_day(date) && self.opens <= time && time <= self.closes {
                    let mut d = date;
                    for _ in 0..n {
                        d = self.next_working_day(d);
                    }
                    self.at(d, time)
                } else {
                    let mut d = if self.is_working_day(date) && time < self.opens {
                        date
                    } else {
                        self.next_working_day(date)
                    };
                    for _ in 1..n {
                        d = self.next_working_day(d);
                    }
                    self.at(d, self.closes)
                }
            }
        };
        Ok(SystemTime::from(due))
    }

    /// `t` as RFC 3339 with the region's offset, e.g. `2026-12-07T17:00:00+01:00`.
    pub fn format(&self, t: SystemTime) -> String {
        match Timestamp::try_from(t) {
            Ok(ts) => ts
                .to_zoned(self.tz.clone())
                .strftime("%Y-%m-%dT%H:%M:%S%:z")
                .to_string(),
            Err(_) => "out of range".into(),
        }
    }

    /// Working time between two instants, counting only the hours between opening and close of
    /// working days (clock time, so a DST change inside a working day does not count).
    pub fn working_time_between(&self, from: SystemTime, to: SystemTime) -> SignedDuration {
        let (Ok(a), Ok(b)) = (Timestamp::try_from(from), Timestamp::try_from(to)) else {
            return SignedDuration::ZERO;
        };
        if b <= a {
            return SignedDuration::ZERO;
        }
        let (za, zb) = (a.to_zoned(self.tz.clone()), b.to_zoned(self.tz.clone()));
        let mut total = SignedDuration::ZERO;
        let mut d = za.date();
        while d <= zb.date() {
            if self.is_working_day(d) {
                let lo = if d == za.date() {
                    za.time().max(self.opens)
                } else {
                    self.opens
                };
                let hi = if d == zb.date() {
                    zb.time().min(self.closes)
                } else {
                    self.closes
                };
                if hi > lo {
                    total += lo.duration_until(hi);
                }
            }
            d = d.tomorrow().expect("within jiff's range");
        }
        total
    }

    /// Length of one working day.
    pub fn working_day_length(&self) -> SignedDuration {
        self.opens.duration_until(self.closes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;
    use proptest::prelude::*;

    fn t(s: &str) -> SystemTime {
        SystemTime::from(s.parse::<Timestamp>().unwrap())
    }

    fn nl() -> Calendar {
        Calendar::default()
    }

    fn names(year: i16, cal: &Calendar) -> Vec<String> {
        cal.holidays(year)
            .into_iter()
            .map(|d| format!("{} {}", d.date, d.name))
            .collect()
    }

    #[test]
    fn easter_is_right_for_known_years() {
        assert_eq!(easter_sunday(2024), date(2024, 3, 31));
        assert_eq!(easter_sunday(2025), date(2025, 4, 20));
        assert_eq!(easter_sunday(2026), date(2026, 4, 5));
        assert_eq!(easter_sunday(2027), date(2027, 3, 28));
        assert_eq!(easter_sunday(2038), date(2038, 4, 25));
    }

    #[test]
    fn the_default_days_off_of_2025_and_2026() {
        assert_eq!(
            names(2025, &nl()),
            [
                "2025-01-01 Nieuwjaarsdag",
                "2025-04-21 Tweede Paasdag",
                "2025-04-26 Koningsdag", // the 27th is a Sunday
                "2025-05-05 Bevrijdingsdag",
                "2025-05-29 Hemelvaartsdag",
                "2025-06-09 Tweede Pinksterdag",
                "2025-12-25 Eerste Kerstdag",
                "2025-12-26 Tweede Kerstdag",
            ]
        );
        let n = names(2026, &nl());
        assert!(n.contains(&"2026-04-27 Koningsdag".to_owned()));
        assert!(n.contains(&"2026-05-14 Hemelvaartsdag".to_owned()));
        assert!(nl().is_working_day(date(2026, 4, 3)), "Good Friday works");
    }

    #[test]
    fn switches_change_good_friday_and_liberation_day() {
        let cal = Calendar::new(&CalendarConfig {
            good_friday_is_working_day: false,
            liberation_day: LiberationDay::EveryFifthYear,
            extra_days_off: vec![ExtraDayOff {
                date: "2026-12-24".into(),
                name: "Kerstavond (regio)".into(),
            }],
            ..CalendarConfig::default()
        })
        .unwrap();
        assert!(!cal.is_working_day(date(2026, 4, 3)));
        assert!(cal.is_working_day(date(2026, 5, 5)));
        assert!(!cal.is_working_day(date(2030, 5, 5)));
        assert!(!cal.is_working_day(date(2026, 12, 24)));
    }

    #[test]
    fn bad_configuration_names_the_field() {
        let f = |c: CalendarConfig| Calendar::new(&c).unwrap_err().field;
        let d = CalendarConfig::default;
        assert_eq!(
            f(CalendarConfig {
                time_zone: "Europe/Atlantis".into(),
                ..d()
            }),
            "time_zone"
        );
        assert_eq!(
            f(CalendarConfig {
                opens: "9 uur".into(),
                ..d()
            }),
            "opens"
        );
        assert_eq!(
            f(CalendarConfig {
                closes: "08:00".into(),
                ..d()
            }),
            "closes"
        );
        assert_eq!(
            f(CalendarConfig {
                extra_days_off: vec![ExtraDayOff {
                    date: "24-12-2026".into(),
                    name: "x".into()
                }],
                ..d()
            }),
            "extra_days_off"
        );
    }

    #[test]
    fn working_days_from_within_hours_keep_the_clock_time() {
        let cal = nl();
        // Wednesday 2 Dec 2026, 10:30 CET.
        let due = cal
            .due(t("2026-12-02T09:30:00Z"), Term::WorkingDays(3))
            .unwrap();
        assert_eq!(cal.format(due), "2026-12-07T10:30:00+01:00");
        // Thursday 23 Dec 2026 11:00: Christmas and Boxing Day fall on Fri and Sat.
        let due = cal
            .due(t("2026-12-24T10:00:00Z"), Term::WorkingDays(1))
            .unwrap();
        assert_eq!(cal.format(due), "2026-12-28T11:00:00+01:00");
        // Across the DST change: Friday 27 March 2026 14:00 CET, two working days.
        let due = cal
            .due(t("2026-03-27T13:00:00Z"), Term::WorkingDays(2))
            .unwrap();
        assert_eq!(cal.format(due), "2026-03-31T14:00:00+02:00");
    }

    #[test]
    fn working_days_from_outside_hours_end_at_close() {
        let cal = nl();
        // Friday 4 Dec 2026 18:00: counting starts Monday.
        let due = cal
            .due(t("2026-12-04T17:00:00Z"), Term::WorkingDays(1))
            .unwrap();
        assert_eq!(cal.format(due), "2026-12-07T17:00:00+01:00");
        // Saturday, two working days.
        let due = cal
            .due(t("2026-12-05T12:00:00Z"), Term::WorkingDays(2))
            .unwrap();
        assert_eq!(cal.format(due), "2026-12-08T17:00:00+01:00");
        // Before opening on a working day: that day is the first.
        let due = cal
            .due(t("2026-12-02T06:00:00Z"), Term::WorkingDays(1))
            .unwrap();
        assert_eq!(cal.format(due), "2026-12-02T17:00:00+01:00");
        // Easter Saturday 2026, one working day: Easter Monday is off.
        let due = cal
            .due(t("2026-04-04T10:00:00Z"), Term::WorkingDays(1))
            .unwrap();
        assert_eq!(cal.format(due), "2026-04-07T17:00:00+02:00");
    }

    #[test]
    fn urgent_terms_are_elapsed_hours() {
        let cal = nl();
        // Saturday night across the DST change: 24 elapsed hours are 25 on the clock.
        let due = cal.due(t("2026-03-28T22:00:00Z"), Term::Hours(24)).unwrap();
        assert_eq!(cal.format(due), "2026-03-30T00:00:00+02:00");
    }

    #[test]
    fn terms_out_of_bounds_are_refused() {
        let cal = nl();
        assert!(
            cal.due(t("2026-12-02T09:30:00Z"), Term::WorkingDays(0))
                .is_err()
        );
        assert!(cal.due(t("2026-12-02T09:30:00Z"), Term::Hours(0)).is_err());
        assert!(
            cal.due(t("2026-12-02T09:30:00Z"), Term::Hours(MAX_HOURS + 1))
                .is_err()
        );
    }

    fn instant() -> impl Strategy<Value = SystemTime> {
        // 2024..2032, to the minute.
        (1_704_067_200u64 / 60..1_956_528_000 / 60)
            .prop_map(|m| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(m * 60))
    }

    proptest! {
        #[test]
        fn n_working_days_are_n_working_days_of_time(from in instant(), n in 1u32..30) {
            let cal = nl();
            let due = cal.due(from, Term::WorkingDays(n)).unwrap();
            prop_assert!(due > from);
            prop_assert_eq!(cal.working_time_between(from, due), cal.working_day_length() * n as i32);
            let local = Timestamp::try_from(due).unwrap().to_zoned(cal.time_zone().clone());
            prop_assert!(cal.is_working_day(local.date()));
            prop_assert!(local.time() >= cal.opens && local.time() <= cal.closes);
        }

        #[test]
        fn a_later_start_never_ends_earlier(a in instant(), b in instant(), n in 1u32..20) {
            let cal = nl();
            let (a, b) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(cal.due(a, Term::WorkingDays(n)).unwrap() <= cal.due(b, Term::WorkingDays(n)).unwrap());
        }

        #[test]
        fn one_more_working_day_is_one_more_working_day(from in instant(), n in 1u32..20) {
            let cal = nl();
            let d1 = cal.due(from, Term::WorkingDays(n)).unwrap();
            let d2 = cal.due(from, Term::WorkingDays(n + 1)).unwrap();
            prop_assert_eq!(cal.working_time_between(d1, d2), cal.working_day_length());
        }

        #[test]
        fn hours_are_elapsed_time(from in instant(), n in 1u32..MAX_HOURS) {
            let due = nl().due(from, Term::Hours(n)).unwrap();
            prop_assert_eq!(due.duration_since(from).unwrap().as_secs(), u64::from(n) * 3600);
        }
    }
}
