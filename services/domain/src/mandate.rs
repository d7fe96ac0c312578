//! Mandates (doorzettingsmacht): who at an organisation may decide what, at which tiers, and
//! whether a mandate is current. A mandate is served to others only while current: valid now, not
//! ended, and not overdue for review.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use crate::{Invalid, vocabulary};

/// The longest a review date may lie ahead of the moment a mandate is set.
pub const MAX_REVIEW_AHEAD: Duration = Duration::from_secs(366 * 24 * 3600);

vocabulary!(
    /// The domains a mandate can cover (DOMAIN.md); a region adds its own as `x_...`.
    Domain, "domain", [
        /// Housing.
        Housing => "housing",
        /// Curative care under the Zvw.
        ZvwCare => "zvw_care",
        /// Long-term care under the Wlz.
        WlzCare => "wlz_care",
        /// Support under the Wmo.
        WmoSupport => "wmo_support",
        /// Income.
        Income => "income",
        /// Debts.
        Debts => "debts",
        /// Safety.
        Safety => "safety",
        /// Youth care.
        Youth => "youth",
    ]
);

vocabulary!(
    /// The decisions a mandate can allow; a region adds its own as `x_...`.
    DecisionType, "decision type", [
        /// Force a placement.
        ForcePlacement => "force_placement",
        /// Pre-finance care or support before the payer is settled.
        PreFinance => "pre_finance",
        /// Suspend an eviction.
        SuspendEviction => "suspend_eviction",
        /// Open a bed.
        OpenBed => "open_bed",
        /// Provide housing.
        ProvideHousing => "provide_housing",
        /// Grant support.
        GrantSupport => "grant_support",
        /// Waive or freeze a debt.
        WaiveDebt => "waive_debt",
        /// Assign a case manager.
        AssignCaseManager => "assign_case_manager",
    ]
);

/// Checks a domain or decision-type value: one of the vocabulary, or a region's own `x_` value of
/// lowercase letters, digits and `_` (at most 64 characters).
pub fn check_term<T: std::str::FromStr>(field: &'static str, value: &str) -> Result<(), Invalid> {
    if value.parse::<T>().is_ok() {
        return Ok(());
    }
    let own = value.len() <= 64
        && value.starts_with("x_")
        && value.len() > 2
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if own {
        Ok(())
    } else {
        Err(Invalid::new(
            field,
            format!(
                "`{}` is not in the vocabulary nor a region's own `x_...` value",
                value.chars().take(64).collect::<String>()
            ),
        ))
    }
}

/// A mandate's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mandate {
    /// Role that holds it.
    pub role: String,
    /// Employee id of the person who holds it, when one does.
    pub person: Option<String>,
    /// Tiers.
    pub tiers: BTreeSet<u32>,
    /// Domains.
    pub domains: BTreeSet<String>,
    /// Decision types.
    pub decision_types: BTreeSet<String>,
    /// Legal basis or delegation.
    pub legal_basis: String,
    /// Valid from (inclusive).
    pub valid_from: SystemTime,
    /// Valid until (exclusive).
    pub valid_until: Option<SystemTime>,
    /// Review date.
    pub review_date: SystemTime,
    /// When ended early.
    pub ended_at: Option<SystemTime>,
}

/// What the region's ladder knows: its tiers (1..=`max_tier`) and, when listed, its roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ladder {
    /// Highest tier.
    pub max_tier: u32,
    /// Roles that may hold mandates; empty = any well-formed role.
    pub roles: BTreeSet<String>,
}

fn is_role(value: &str) -> bool {
    (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:@-".contains(&b))
}

impl Mandate {
    /// Checks the terms as set at `now`; names the offending field.
    pub fn validate(&self, ladder: &Ladder, now: SystemTime) -> Result<(), Invalid> {
        if !is_role(&self.role) {
            return Err(Invalid::new(
                "role",
                "must be 1 to 64 letters, digits or . _ : @ -",
            ));
        }
        if !ladder.roles.is_empty() && !ladder.roles.contains(&self.role) {
            return Err(Invalid::new("role", "is not a role of the region's ladder"));
        }
        if self.person.as_deref().is_some_and(|p| !is_role(p)) {
            return Err(Invalid::new(
                "person",
                "must be an employee id (1 to 64 letters, digits or . _ : @ -)",
            ));
        }
        if self.tiers.is_empty() {
            return Err(Invalid::new("tiers", "must not be empty"));
        }
        if let Some(t) = self
            .tiers
            .iter()
            .find(|t| **t == 0 || **t > ladder.max_tier)
        {
            return Err(Invalid::new(
                "tiers",
                format!(
                    "tier {t} is not on the region's ladder (1 to {})",
                    ladder.max_tier
                ),
            ));
        }
        if self.domains.is_empty() {
            return Err(Invalid::new("domains", "must not be empty"));
        }
        for d in &self.domains {
            check_term::<Domain>("domains", d)?;
        }
        if self.decision_types.is_empty() {
            return Err(Invalid::new("decision_types", "must not be empty"));
        }
        for d in &self.decision_types {
            check_term::<DecisionType>("decision_types", d)?;
        }
        if self.legal_basis.trim().is_empty() || self.legal_basis.len() > 200 {
            return Err(Invalid::new("legal_basis", "must be 1 to 200 characters"));
        }
        if self.valid_until.is_some_and(|u| u <= self.valid_from) {
            return Err(Invalid::new("valid_until", "must be after valid_from"));
        }
        if self.review_date > now + MAX_REVIEW_AHEAD {
            return Err(Invalid::new("review_date", "must be at most a year ahead"));
        }
        Ok(())
    }

    /// Whether the review date has passed at `now`.
    pub fn is_review_overdue(&self, now: SystemTime) -> bool {
        self.review_date <= now
    }

    /// Whether it is valid at `at` (period and early end), regardless of review.
    pub fn is_valid_at(&self, at: SystemTime) -> bool {
        self.valid_from <= at
            && self.valid_until.is_none_or(|u| at < u)
            && self.ended_at.is_none_or(|e| at < e)
    }

    /// Whether it is served to others at `now`: valid and not overdue for review.
    pub fn is_current(&self, now: SystemTime) -> bool {
        self.is_valid_at(now) && !self.is_review_overdue(now)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn now() -> SystemTime {
        std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn ladder() -> Ladder {
        Ladder {
            max_tier: 4,
            roles: BTreeSet::new(),
        }
    }

    fn mandate() -> Mandate {
        Mandate {
            role: "wethouder".into(),
            person: None,
            tiers: [3, 4].into(),
            domains: ["housing".into(), "x_twente_pilot".into()].into(),
            decision_types: ["suspend_eviction".into()].into(),
            legal_basis: "Mandaatbesluit 2026 art. 4".into(),
            valid_from: now() - DAY,
            valid_until: Some(now() + 100 * DAY),
            review_date: now() + 200 * DAY,
            ended_at: None,
        }
    }

    #[test]
    fn validation_names_the_field() {
        assert!(mandate().validate(&ladder(), now()).is_ok());
        let f = |m: Mandate| m.validate(&ladder(), now()).unwrap_err().field;
        assert_eq!(
            f(Mandate {
                tiers: [5].into(),
                ..mandate()
            }),
            "tiers"
        );
        assert_eq!(
            f(Mandate {
                tiers: BTreeSet::new(),
                ..mandate()
            }),
            "tiers"
        );
        assert_eq!(
            f(Mandate {
                domains: ["gardening".into()].into(),
                ..mandate()
            }),
            "domains"
        );
        assert_eq!(
            f(Mandate {
                decision_types: ["x_".into()].into(),
                ..mandate()
            }),
            "decision_types"
        );
        assert_eq!(
            f(Mandate {
                valid_until: Some(now() - 2 * DAY),
                ..mandate()
            }),
            "valid_until"
        );
        assert_eq!(
            f(Mandate {
                review_date: now() + 400 * DAY,
                ..mandate()
            }),
            "review_date"
        );
        assert_eq!(
            f(Mandate {
                role: "Jan de Vries".into(),
                ..mandate()
            }),
            "role"
        );
        let strict = Ladder {
            max_tier: 4,
            roles: ["bestuurder".into()].into(),
        };
        assert_eq!(
            mandate().validate(&strict, now()).unwrap_err().field,
            "role"
        );
    }

    #[test]
    fn expired_ended_or_overdue_mandates_are_not_current() {
        assert!(mandate().is_current(now()));
        assert!(
            !mandate().is_current(now() + 100 * DAY),
            "until is exclusive"
        );
        assert!(
            !Mandate {
                ended_at: Some(now()),
                ..mandate()
            }
            .is_current(now())
        );
        let overdue = Mandate {
            review_date: now() - DAY,
            ..mandate()
        };
        assert!(overdue.is_review_overdue(now()) && !overdue.is_current(now()));
        assert!(overdue.is_valid_at(now()));
    }

    proptest! {
        #[test]
        fn current_means_valid_and_reviewed(from in 0u64..100, until in proptest::option::of(1u64..100), review in 0u64..200, ended in proptest::option::of(0u64..200), at in 0u64..200) {
            let day = |n: u64| now() + DAY * n as u32;
            let m = Mandate { valid_from: day(from), valid_until: until.map(|u| day(from + u)), review_date: day(review), ended_at: ended.map(day), ..mandate() };
            let t = day(at);
            let expected = from <= at && until.is_none_or(|u| at < from + u) && ended.is_none_or(|e| at < e) && at < review;
            prop_assert_eq!(m.is_current(t), expected);
        }
    }
}
