//! `doorzetctl deadline` and `doorzetctl calendar`: the region's working-day calendar by hand, so an
//! operator can check a ladder's terms against the region's agreements.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use doorzet_domain::calendar::{Calendar, CalendarConfig, Term};
use doorzet_domain::ladder::RegionLadder;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Why the calendar or the moment could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CalendarError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is neither a valid ladder nor a valid calendar.
    #[error("calendar {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `--from` is not RFC 3339.
    #[error("--from `{0}` is not an RFC 3339 moment with offset, e.g. 2026-12-04T16:30:00+01:00")]
    From(String),
    /// The term is out of bounds.
    #[error("{0}")]
    Term(doorzet_domain::Invalid),
}

/// The calendar in `file` (a ladder file's `[calendar]`, or a file of calendar keys only), or the
/// Dutch default.
pub fn load(file: Option<&Path>) -> Result<Calendar, CalendarError> {
    let Some(path) = file else {
        return Ok(Calendar::default());
    };
    let text = std::fs::read_to_string(path).map_err(|source| CalendarError::Read {
        path: path.to_owned(),
        source,
    })?;
    let invalid = |reason: String| CalendarError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let is_ladder = toml::from_str::<toml::Table>(&text)
        .map_err(|e| invalid(e.message().to_owned()))?
        .contains_key("region");
    let config = if is_ladder {
        RegionLadder::from_toml(&text)
            .map_err(|e| invalid(e.to_string()))?
            .calendar
    } else {
        toml::from_str::<CalendarConfig>(&text).map_err(|e| invalid(e.message().to_owned()))?
    };
    Calendar::new(&config).map_err(|e| invalid(e.to_string()))
}

/// The due instant of `term` from `from` (RFC 3339), as RFC 3339 with the region's offset.
pub fn deadline(calendar: &Calendar, from: &str, term: Term) -> Result<String, CalendarError> {
    let start = OffsetDateTime::parse(from, &Rfc3339)
        .map_err(|_| CalendarError::From(from.chars().take(64).collect()))?;
    let due = calendar
        .due(SystemTime::from(start), term)
        .map_err(CalendarError::Term)?;
    Ok(calendar.format(due))
}

/// The non-working days of `year` other than weekends, one per line: date, weekday, name.
pub fn listing(calendar: &Calendar, year: i16) -> String {
    let mut out = String::new();
    for day in calendar.holidays(year) {
        let weekday = format!("{:?}", day.date.weekday());
        let note = if matches!(day.date.weekday().to_monday_one_offset(), 6 | 7) {
            " (falls in the weekend)"
        } else {
            ""
        };
        out.push_str(&format!(
            "{}  {:<9}  {}{note}\n",
            day.date, weekday, day.name
        ));
    }
    out.push_str("and every Saturday and Sunday\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_prints_rfc3339_with_the_offset() {
        let cal = Calendar::default();
        assert_eq!(
            deadline(&cal, "2026-12-04T16:30:00+01:00", Term::WorkingDays(5)).unwrap(),
            "2026-12-11T16:30:00+01:00"
        );
        assert_eq!(
            deadline(&cal, "2026-12-04T15:30:00Z", Term::Hours(24)).unwrap(),
            "2026-12-05T16:30:00+01:00"
        );
        assert!(matches!(
            deadline(&cal, "4 december", Term::Hours(1)),
            Err(CalendarError::From(_))
        ));
    }

    #[test]
    fn a_calendar_file_or_a_ladder_file_sets_the_days_off() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("calendar.toml");
        std::fs::write(
            &own,
            "good_friday_is_working_day = false\nliberation_day = \"every_fifth_year\"\n",
        )
        .unwrap();
        let text = listing(&load(Some(&own)).unwrap(), 2026);
        assert!(
            text.contains("2026-04-03  Friday     Goede Vrijdag"),
            "{text}"
        );
        assert!(!text.contains("Bevrijdingsdag"), "{text}");
        let ladder =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/regions/twente-rdm.toml");
        let text = listing(&load(Some(&ladder)).unwrap(), 2025);
        assert!(
            text.contains("2025-04-26  Saturday   Koningsdag (falls in the weekend)"),
            "{text}"
        );
        std::fs::write(&own, "opens = \"negen\"\n").unwrap();
        let e = load(Some(&own)).unwrap_err().to_string();
        assert!(e.contains("opens") && e.contains("calendar.toml"), "{e}");
    }
}
