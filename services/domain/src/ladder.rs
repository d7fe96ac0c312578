//! A region's escalation ladder as data (`deploy/regions/*.toml`): its tiers, who may register at
//! each, who must be at the table, the term and what happens when it passes, which tiers may be
//! skipped, and the calendar the terms are counted in. Parsed and checked here so the coordinator and
//! `doorzetctl` refuse the same files with the same message, naming the tier and field.

use std::collections::BTreeSet;
use std::time::SystemTime;

use serde::Deserialize;

use crate::OrgKind;
use crate::calendar::{Calendar, CalendarConfig, Term};
use crate::disclosure::FactCategory;

/// An organisation kind with a mandate role: who registers, organises or sits at a table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seat {
    /// Organisation kind.
    pub kind: OrgKind,
    /// Mandate role within it (as in `ListMandates`).
    pub role: String,
}

/// A participant who joins only for some cases.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseDependentSeat {
    /// Organisation kind.
    pub kind: OrgKind,
    /// Mandate role.
    pub role: String,
    /// Joins when the escalation names any of these categories; empty: when the registrant asks.
    #[serde(default)]
    pub when: Vec<FactCategory>,
}

/// Who may register at a tier.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registrants {
    /// Organisation kinds.
    pub kinds: BTreeSet<OrgKind>,
    /// Roles (from the person's token); empty: any role of those organisations.
    #[serde(default)]
    pub roles: BTreeSet<String>,
}

/// A tier's term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierTerm {
    /// Working days to reach the table and decide.
    pub working_days: u32,
    /// Elapsed hours under the urgent procedure.
    pub urgent_hours: u32,
}

impl TierTerm {
    /// The term that applies.
    pub fn for_case(self, urgent: bool) -> Term {
        if urgent {
            Term::Hours(self.urgent_hours)
        } else {
            Term::WorkingDays(self.working_days)
        }
    }
}

/// What happens when a tier's term passes without a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnTermPassed {
    /// Move the case up to the next tier by itself.
    Escalate,
    /// Alert the process director, who decides.
    AlertProcessDirector,
}

/// One tier of the ladder.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// 1 for the lowest.
    pub number: u32,
    /// Its name.
    pub name: String,
    /// The table that meets at this tier.
    pub table: String,
    /// Who may register a case here.
    pub registrants: Registrants,
    /// Who plans the meeting (`PlanMeeting`).
    pub organiser: Seat,
    /// Always at the table.
    pub required: Vec<Seat>,
    /// At the table for some cases.
    #[serde(default)]
    pub case_dependent: Vec<CaseDependentSeat>,
    /// The term.
    pub term: TierTerm,
    /// What happens when it passes.
    pub on_term_passed: OnTermPassed,
    /// When a case goes up from here (shown to people; the decision to go up is theirs).
    #[serde(default)]
    pub conditions_up: Vec<String>,
    /// Lower tiers this one may directly follow, skipping the tiers between them.
    #[serde(default)]
    pub may_follow: BTreeSet<u32>,
    /// The tier a case reopens at when the follow-up shows the solution did not happen (default:
    /// this one).
    #[serde(default)]
    pub reopen_at: Option<u32>,
    /// Working days after a decision at which the registrant confirms the solution.
    pub follow_up_working_days: u32,
}

/// Region metadata.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionInfo {
    /// Short id, e.g. `twente`.
    pub id: String,
    /// Name.
    pub name: String,
    /// The model (e.g. `rdm`, `schakelteam`, `ave`).
    pub model: String,
    /// Who is alerted when a term passes or a commitment is overdue.
    pub process_director: Seat,
    /// Whether the values are the region's agreement or examples to be replaced.
    #[serde(default)]
    pub example_values: bool,
}

/// A region's ladder, as in its file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionLadder {
    /// The region.
    pub region: RegionInfo,
    /// Its calendar (the Dutch default when absent).
    #[serde(default)]
    pub calendar: CalendarConfig,
    /// Tiers, lowest first.
    pub tiers: Vec<Tier>,
}

/// Why a ladder file was refused: the tier (when one) and field, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}field `{field}`: {reason}", tier.map(|t| format!("tier {t}: ")).unwrap_or_default())]
pub struct LadderError {
    /// The tier, when the error is in one.
    pub tier: Option<u32>,
    /// The field.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl LadderError {
    fn at(tier: Option<u32>, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            tier,
            field: field.into(),
            reason: reason.into(),
        }
    }
}

fn is_role(value: &str) -> bool {
    (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:@-".contains(&b))
}

/// Why a registration at a tier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationRefused {
    /// The tier is not on the ladder.
    #[error("tier {0} is not on the region's ladder")]
    NoSuchTier(u32),
    /// The organisation kind may not register here.
    #[error("a {kind} may not register at tier {tier}")]
    KindNotAllowed {
        /// The tier.
        tier: u32,
        /// The registrant's kind.
        kind: OrgKind,
    },
    /// The person's roles may not register here.
    #[error("none of the roles {roles:?} may register at tier {tier}")]
    RoleNotAllowed {
        /// The tier.
        tier: u32,
        /// The person's roles.
        roles: Vec<String>,
    },
    /// An earlier tier was not tried (and the urgent procedure does not apply).
    #[error("tier {missing} was not tried before tier {tier} (outside the urgent procedure)")]
    EarlierTierNotTried {
        /// The tier asked for.
        tier: u32,
        /// The lowest tier missing from the history.
        missing: u32,
    },
}

impl RegionLadder {
    /// Parses and checks a ladder file's text.
    pub fn from_toml(text: &str) -> Result<Self, LadderError> {
        let ladder: RegionLadder = toml::from_str(text).map_err(|e| {
            let span = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].lines().count().max(1);
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            LadderError::at(None, "toml", format!("{}{span}", e.message()))
        })?;
        ladder.validate()?;
        Ok(ladder)
    }

    /// Checks the ladder's rules; names the tier and field.
    pub fn validate(&self) -> Result<(), LadderError> {
        let r = &self.region;
        if r.id.is_empty() || !r.id.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
            return Err(LadderError::at(
                None,
                "region.id",
                "must be lowercase letters and -",
            ));
        }
        if !is_role(&r.process_director.role) {
            return Err(LadderError::at(
                None,
                "region.process_director.role",
                "must be 1 to 64 letters, digits or . _ : @ -",
            ));
        }
        Calendar::new(&self.calendar)
            .map_err(|e| LadderError::at(None, format!("calendar.{}", e.field), e.reason))?;
        if self.tiers.is_empty() {
            return Err(LadderError::at(None, "tiers", "a ladder needs a tier"));
        }
        for (i, tier) in self.tiers.iter().enumerate() {
            let n = tier.number;
            let at = |field: &str, reason: &str| LadderError::at(Some(n), field, reason);
            if n as usize != i + 1 {
                return Err(LadderError::at(
                    Some(n),
                    "number",
                    format!(
                        "tiers must be numbered 1, 2, 3 … in order; expected {}",
                        i + 1
                    ),
                ));
            }
            if tier.name.trim().is_empty() {
                return Err(at("name", "must not be empty"));
            }
            if tier.table.trim().is_empty() {
                return Err(at("table", "must not be empty"));
            }
            if tier.registrants.kinds.is_empty() {
                return Err(at(
                    "registrants.kinds",
                    "someone must be able to register here",
                ));
            }
            if let Some(role) = tier.registrants.roles.iter().find(|r| !is_role(r)) {
                return Err(LadderError::at(
                    Some(n),
                    "registrants.roles",
                    format!("`{role}` is not a role"),
                ));
            }
            if tier.required.is_empty() {
                return Err(at("required", "a table needs participants"));
            }
            let seats = std::iter::once(("organiser", &tier.organiser.role))
                .chain(tier.required.iter().map(|s| ("required", &s.role)))
                .chain(
                    tier.case_dependent
                        .iter()
                        .map(|s| ("case_dependent", &s.role)),
                );
            for (field, role) in seats {
                if !is_role(role) {
                    return Err(LadderError::at(
                        Some(n),
                        format!("{field}.role"),
                        format!("`{role}` is not a role"),
                    ));
                }
            }
            Term::WorkingDays(tier.term.working_days)
                .validate("term.working_days")
                .and(Term::Hours(tier.term.urgent_hours).validate("term.urgent_hours"))
                .map_err(|e| LadderError::at(Some(n), e.field, e.reason))?;
            Term::WorkingDays(tier.follow_up_working_days)
                .validate("follow_up_working_days")
                .map_err(|e| LadderError::at(Some(n), e.field, e.reason))?;
            if let Some(lower) = tier.may_follow.iter().find(|t| **t == 0 || **t + 1 >= n) {
                return Err(LadderError::at(
                    Some(n),
                    "may_follow",
                    format!(
                        "tier {lower} is not a lower tier that leaves one out (1 to {})",
                        n.saturating_sub(2)
                    ),
                ));
            }
            if tier
                .reopen_at
                .is_some_and(|t| t == 0 || t as usize > self.tiers.len())
            {
                return Err(at("reopen_at", "must be a tier of the ladder"));
            }
            if tier.on_term_passed == OnTermPassed::Escalate && i + 1 == self.tiers.len() {
                return Err(at(
                    "on_term_passed",
                    "the top tier cannot escalate; use alert_process_director",
                ));
            }
        }
        Ok(())
    }

    /// The calendar the terms count in.
    pub fn calendar(&self) -> Calendar {
        Calendar::new(&self.calendar).expect("validated when loaded")
    }

    /// Tier `n`.
    pub fn tier(&self, n: u32) -> Option<&Tier> {
        n.checked_sub(1).and_then(|i| self.tiers.get(i as usize))
    }

    /// The highest tier.
    pub fn top(&self) -> u32 {
        self.tiers.len() as u32
    }

    /// Whether a case may move straight from tier `from` to the higher tier `to`.
    pub fn may_move_up(&self, from: u32, to: u32) -> bool {
        to == from + 1 || self.tier(to).is_some_and(|t| t.may_follow.contains(&from))
    }

    /// The tiers a case must have tried before it is registered at `tier`: every lower tier, less
    /// those a skip allowed by the ladder leaves out, given the tiers it did try.
    pub fn missing_before(&self, tier: u32, tried: &BTreeSet<u32>) -> Option<u32> {
        // Walk down from `tier`: each step needs the tier below, or a tried tier it may follow.
        let mut at = tier;
        while at > 1 {
            let below = at - 1;
            if tried.contains(&below) {
                at = below;
                continue;
            }
            let skip = self.tier(at).and_then(|t| {
                t.may_follow
                    .iter()
                    .rev()
                    .find(|f| tried.contains(f))
                    .copied()
            });
            match skip {
                Some(f) => at = f,
                None => return Some(below),
            }
        }
        None
    }

    /// Checks that `kind` with `roles` may register at `tier` with the tiers it `tried`; the urgent
    /// procedure waives the earlier tiers.
    pub fn check_registration(
        &self,
        tier: u32,
        kind: OrgKind,
        roles: &[String],
        tried: &BTreeSet<u32>,
        urgent: bool,
    ) -> Result<(), RegistrationRefused> {
        let t = self
            .tier(tier)
            .ok_or(RegistrationRefused::NoSuchTier(tier))?;
        if !t.registrants.kinds.contains(&kind) {
            return Err(RegistrationRefused::KindNotAllowed { tier, kind });
        }
        if !t.registrants.roles.is_empty() && !roles.iter().any(|r| t.registrants.roles.contains(r))
        {
            return Err(RegistrationRefused::RoleNotAllowed {
                tier,
                roles: roles.to_vec(),
            });
        }
        if !urgent && let Some(missing) = self.missing_before(tier, tried) {
            return Err(RegistrationRefused::EarlierTierNotTried { tier, missing });
        }
        Ok(())
    }

    /// When a case at `tier` that reached it at `from` must have its decision.
    pub fn deadline(&self, tier: u32, urgent: bool, from: SystemTime) -> Option<SystemTime> {
        let t = self.tier(tier)?;
        self.calendar().due(from, t.term.for_case(urgent)).ok()
    }

    /// The participants of a table at `tier` for a case naming `categories`: the required seats and
    /// the case-dependent seats those categories (or the registrant's `asked` seats) call for.
    pub fn seats(&self, tier: u32, categories: &[FactCategory], asked: &[Seat]) -> Vec<Seat> {
        let Some(t) = self.tier(tier) else {
            return Vec::new();
        };
        let mut seats: Vec<Seat> = t.required.clone();
        for c in &t.case_dependent {
            let seat = Seat {
                kind: c.kind,
                role: c.role.clone(),
            };
            if c.when.iter().any(|w| categories.contains(w)) || asked.contains(&seat) {
                seats.push(seat);
            }
        }
        seats.sort();
        seats.dedup();
        seats
    }

    /// The tier roles, for checking mandates (`mandate::Ladder`).
    pub fn mandate_ladder(&self) -> crate::mandate::Ladder {
        let mut roles = BTreeSet::new();
        for t in &self.tiers {
            roles.insert(t.organiser.role.clone());
            roles.extend(t.required.iter().map(|s| s.role.clone()));
            roles.extend(t.case_dependent.iter().map(|s| s.role.clone()));
        }
        crate::mandate::Ladder {
            max_tier: self.top(),
            roles,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small ladder for tests: four tiers, tier 3 may follow tier 1, tier 1 escalates by itself.
    pub(crate) const LADDER: &str = r#"
[region]
id = "proefregio"
name = "Proefregio"
model = "rdm"
process_director = { kind = "care_and_safety_house", role = "procesregisseur" }
example_values = true

[[tiers]]
number = 1
name = "Regionale transfer"
table = "Triage- en transfertafel"
registrants = { kinds = ["municipality", "mental_health_institution"] }
organiser = { kind = "mental_health_institution", role = "procesregisseur" }
required = [{ kind = "mental_health_institution", role = "teamleider" }]
term = { working_days = 10, urgent_hours = 48 }
on_term_passed = "escalate"
follow_up_working_days = 20

[[tiers]]
number = 2
name = "Bovenregionaal"
table = "Bovenregionale tafel"
registrants = { kinds = ["mental_health_institution"] }
organiser = { kind = "care_office", role = "procesregisseur" }
required = [{ kind = "care_office", role = "zorginkoper" }]
term = { working_days = 10, urgent_hours = 48 }
on_term_passed = "escalate"
follow_up_working_days = 20

[[tiers]]
number = 3
name = "Bestuurlijk"
table = "Bestuurlijk escalatieoverleg"
registrants = { kinds = ["municipality", "mental_health_institution", "health_insurer", "client_support"] }
organiser = { kind = "municipality", role = "procesregisseur" }
required = [
  { kind = "municipality", role = "wethouder" },
  { kind = "mental_health_institution", role = "bestuurder" },
]
case_dependent = [{ kind = "police", role = "teamchef", when = ["risk_signal"] }, { kind = "housing_corporation", role = "directeur", when = ["eviction_date"] }]
term = { working_days = 5, urgent_hours = 24 }
on_term_passed = "alert_process_director"
may_follow = [1]
reopen_at = 3
follow_up_working_days = 20

[[tiers]]
number = 4
name = "Minister"
table = "VWS"
registrants = { kinds = ["municipality"] }
organiser = { kind = "care_and_safety_house", role = "procesregisseur" }
required = [{ kind = "other", role = "minister" }]
term = { working_days = 20, urgent_hours = 72 }
on_term_passed = "alert_process_director"
follow_up_working_days = 40
"#;

    pub(crate) fn ladder() -> RegionLadder {
        RegionLadder::from_toml(LADDER).unwrap()
    }

    #[test]
    fn the_test_ladder_loads() {
        let l = ladder();
        assert_eq!(l.top(), 4);
        assert!(l.may_move_up(1, 2));
        assert!(l.may_move_up(1, 3));
        assert!(!l.may_move_up(1, 4));
        assert!(!l.may_move_up(2, 4));
    }

    #[test]
    fn errors_name_the_tier_and_field() {
        let bad = |from: &str, to: &str| {
            RegionLadder::from_toml(&LADDER.replacen(from, to, 1)).unwrap_err()
        };
        let e = bad("working_days = 5,", "working_days = 0,");
        assert_eq!((e.tier, e.field.as_str()), (Some(3), "term.working_days"));
        let e = bad("may_follow = [1]", "may_follow = [2]");
        assert_eq!((e.tier, e.field.as_str()), (Some(3), "may_follow"));
        let e = bad("number = 2", "number = 5");
        assert_eq!((e.tier, e.field.as_str()), (Some(5), "number"));
        let e = bad("kind = \"police\"", "kind = \"politie\"");
        assert_eq!(e.field, "toml");
        assert!(
            e.reason.contains("politie") && e.reason.contains("line"),
            "{e}"
        );
        let e = bad("[region]", "[region]\ncolour = \"blue\"");
        assert!(e.reason.contains("colour"), "{e}");
        let e = bad(
            "example_values = true",
            "example_values = true\n[calendar]\nopens = \"negen\"",
        );
        assert_eq!(e.field, "calendar.opens");
        assert_eq!(
            e.to_string(),
            "field `calendar.opens`: `negen` is not a clock time HH:MM"
        );
    }

    #[test]
    fn registration_needs_the_right_kind_role_and_history() {
        let l = ladder();
        let none = BTreeSet::new();
        let roles = ["casusregisseur".to_owned()];
        assert!(
            l.check_registration(1, OrgKind::Municipality, &roles, &none, false)
                .is_ok()
        );
        assert_eq!(
            l.check_registration(1, OrgKind::Police, &roles, &none, false),
            Err(RegistrationRefused::KindNotAllowed {
                tier: 1,
                kind: OrgKind::Police
            })
        );
        assert_eq!(
            l.check_registration(3, OrgKind::Municipality, &roles, &none, false),
            Err(RegistrationRefused::EarlierTierNotTried {
                tier: 3,
                missing: 2
            })
        );
        // Tier 3 may follow tier 1 directly, and the urgent procedure waives the history.
        assert!(
            l.check_registration(3, OrgKind::Municipality, &roles, &[1].into(), false)
                .is_ok()
        );
        assert!(
            l.check_registration(3, OrgKind::Municipality, &roles, &none, true)
                .is_ok()
        );
        assert_eq!(
            l.check_registration(4, OrgKind::Municipality, &roles, &[1].into(), false),
            Err(RegistrationRefused::EarlierTierNotTried {
                tier: 4,
                missing: 3
            })
        );
        assert!(
            l.check_registration(4, OrgKind::Municipality, &roles, &[1, 3].into(), false)
                .is_ok()
        );
        assert_eq!(
            l.check_registration(9, OrgKind::Municipality, &roles, &none, true),
            Err(RegistrationRefused::NoSuchTier(9))
        );
    }

    #[test]
    fn seats_follow_the_case() {
        let l = ladder();
        let plain = l.seats(3, &[], &[]);
        assert_eq!(plain.len(), 2);
        let eviction = l.seats(3, &[FactCategory::EvictionDate], &[]);
        assert!(eviction.contains(&Seat {
            kind: OrgKind::HousingCorporation,
            role: "directeur".into()
        }));
        let asked = l.seats(
            3,
            &[],
            &[Seat {
                kind: OrgKind::Police,
                role: "teamchef".into(),
            }],
        );
        assert_eq!(asked.len(), 3);
    }
}

#[cfg(test)]
mod presets {
    use super::*;

    #[test]
    fn the_shipped_presets_load_and_are_marked_as_examples() {
        for (name, text) in [
            (
                "twente-rdm",
                include_str!("../../../deploy/regions/twente-rdm.toml"),
            ),
            (
                "schakelteam",
                include_str!("../../../deploy/regions/schakelteam.toml"),
            ),
            ("ave", include_str!("../../../deploy/regions/ave.toml")),
            (
                "local-mesh",
                include_str!("../../../deploy/regions/local-mesh.toml"),
            ),
        ] {
            let l = RegionLadder::from_toml(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(l.region.example_values, "{name}");
        }
        let rdm = RegionLadder::from_toml(include_str!("../../../deploy/regions/twente-rdm.toml"))
            .unwrap();
        assert_eq!(rdm.top(), 4);
        assert!(rdm.may_move_up(1, 3), "RDM: tier 3 may follow tier 1");
        let schakel =
            RegionLadder::from_toml(include_str!("../../../deploy/regions/schakelteam.toml"))
                .unwrap();
        assert_eq!(schakel.top(), 3);
    }
}
