//! The disclosure rule: whether one fact about a case may go to an organisation that asks, for a
//! purpose, at a moment. It is the only place the rule lives; the node stores and serves, this
//! decides.
//!
//! A fact is disclosed when at least one consent or legal basis of its case covers its category,
//! the asking organisation (by id or by kind), the purpose, and the moment (valid from inclusive,
//! until exclusive), and was not withdrawn at or before that moment. Otherwise it is withheld with
//! the reason of the basis that came closest, checked in the order category, recipient, purpose,
//! withdrawal, validity period; with no basis at all the reason is "no consent".

use std::collections::BTreeSet;
use std::time::SystemTime;

use crate::{Invalid, Oin, OrgKind, vocabulary};

vocabulary!(
    /// What a fact is about (closed: a node cannot invent categories a recipient cannot read).
    FactCategory, "fact category", [
        /// Where and how the person lives now.
        LivingSituation => "living_situation",
        /// Date of a planned eviction.
        EvictionDate => "eviction_date",
        /// Legal title such as a crisis measure or care authorisation (Wvggz, Wzd).
        LegalTitle => "legal_title",
        /// Required security level of a placement.
        RequiredSecurityLevel => "required_security_level",
        /// The current care provider.
        CurrentProvider => "current_provider",
        /// Diagnosis group (never a diagnosis).
        DiagnosisGroup => "diagnosis_group",
        /// A risk signal (danger to self or others, escalating behaviour).
        RiskSignal => "risk_signal",
        /// Financing: which law and which payer.
        Financing => "financing",
    ]
);

vocabulary!(
    /// Why facts are asked for.
    Purpose, "purpose", [
        /// Preparing and holding an escalation table.
        EscalationMeeting => "escalation_meeting",
        /// Following up a decision's commitments.
        FollowUp => "follow_up",
        /// The urgent procedure: acting before a table meets.
        UrgentIntervention => "urgent_intervention",
    ]
);

vocabulary!(
    /// Why a fact was withheld; the answer carries this and the category, never the content.
    WithheldReason, "withheld reason", [
        /// The case has no consent or legal basis at all.
        NoConsent => "no_consent",
        /// No basis covers the fact's category.
        CategoryNotCovered => "category_not_covered",
        /// A basis covers the category, but not the asking organisation.
        RecipientNotCovered => "recipient_not_covered",
        /// A basis covers category and recipient, but not the purpose.
        PurposeNotCovered => "purpose_not_covered",
        /// The covering consent was withdrawn at or before the moment asked.
        Withdrawn => "consent_withdrawn",
        /// The covering basis ended before the moment asked.
        Expired => "expired",
        /// The covering basis starts after the moment asked.
        NotYetValid => "not_yet_valid",
    ]
);

/// Who may receive facts under a basis.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Recipient {
    /// One organisation.
    Org(Oin),
    /// Every organisation of a kind.
    Kind(OrgKind),
}

impl Recipient {
    fn covers(&self, asker: &Asker) -> bool {
        match self {
            Self::Org(org) => *org == asker.org,
            Self::Kind(kind) => *kind == asker.kind,
        }
    }
}

/// Who gave a basis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GivenBy {
    /// The person the case is about.
    Person,
    /// A legal representative (mentor, curator, guardian).
    Representative,
    /// A law, by name and article (no consent needed; cannot be withdrawn, only ended).
    Law {
        /// The law, e.g. `Wvggz`.
        law: String,
        /// The article, e.g. `8:16`.
        article: String,
    },
}

/// A consent or a legal basis for disclosing a case's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Basis {
    /// Who gave it.
    pub given_by: GivenBy,
    /// Categories it covers.
    pub categories: BTreeSet<FactCategory>,
    /// Who may receive them.
    pub recipients: BTreeSet<Recipient>,
    /// For what.
    pub purposes: BTreeSet<Purpose>,
    /// From when (inclusive).
    pub valid_from: SystemTime,
    /// Until when (exclusive); open-ended when unset.
    pub valid_until: Option<SystemTime>,
    /// When the consent was withdrawn; a request at or after this moment sees nothing it covered.
    pub withdrawn_at: Option<SystemTime>,
}

impl Basis {
    /// Checks the shape of a basis as it is recorded; names the offending field.
    pub fn validate(&self) -> Result<(), Invalid> {
        let empty = |field: &'static str| Invalid::new(field, "must not be empty");
        if self.categories.is_empty() {
            return Err(empty("categories"));
        }
        if self.recipients.is_empty() {
            return Err(empty("recipients"));
        }
        if self.purposes.is_empty() {
            return Err(empty("purposes"));
        }
        if self
            .valid_until
            .is_some_and(|until| until <= self.valid_from)
        {
            return Err(Invalid::new("valid_until", "must be after valid_from"));
        }
        if let GivenBy::Law { law, article } = &self.given_by {
            if law.trim().is_empty() {
                return Err(Invalid::new("law", "must name the law"));
            }
            if article.trim().is_empty() {
                return Err(Invalid::new("article", "must name the article"));
            }
            if self.withdrawn_at.is_some() {
                return Err(Invalid::new(
                    "withdrawn_at",
                    "a legal basis is not withdrawn; end it with valid_until",
                ));
            }
        }
        Ok(())
    }
}

/// Who asks, why, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asker {
    /// The asking organisation.
    pub org: Oin,
    /// Its kind, as the directory lists it.
    pub kind: OrgKind,
    /// The purpose of the participation grant.
    pub purpose: Purpose,
    /// The moment of the request.
    pub at: SystemTime,
}

/// The decision about one fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Disclose it, under the basis at this position.
    Disclose {
        /// Index into the bases given.
        basis: usize,
    },
    /// Withhold it, for this reason.
    Withhold(WithheldReason),
}

impl Decision {
    /// Whether the fact is disclosed.
    pub fn is_disclosed(self) -> bool {
        matches!(self, Self::Disclose { .. })
    }
}

/// How far a basis gets before it fails: higher is closer to covering the request.
fn check(basis: &Basis, category: FactCategory, asker: &Asker) -> Result<(), (u8, WithheldReason)> {
    use WithheldReason::*;
    if !basis.categories.contains(&category) {
        return Err((0, CategoryNotCovered));
    }
    if !basis.recipients.iter().any(|r| r.covers(asker)) {
        return Err((1, RecipientNotCovered));
    }
    if !basis.purposes.contains(&asker.purpose) {
        return Err((2, PurposeNotCovered));
    }
    if basis.withdrawn_at.is_some_and(|w| w <= asker.at) {
        return Err((3, Withdrawn));
    }
    if asker.at < basis.valid_from {
        return Err((4, NotYetValid));
    }
    if basis.valid_until.is_some_and(|until| until <= asker.at) {
        return Err((4, Expired));
    }
    Ok(())
}

/// Decides whether a fact of `category` may go to `asker`, given every basis of its case.
pub fn decide(category: FactCategory, bases: &[Basis], asker: &Asker) -> Decision {
    let mut closest: Option<(u8, WithheldReason)> = None;
    for (i, basis) in bases.iter().enumerate() {
        match check(basis, category, asker) {
            Ok(()) => return Decision::Disclose { basis: i },
            Err(failure) => {
                if closest.is_none_or(|(stage, _)| failure.0 > stage) {
                    closest = Some(failure);
                }
            }
        }
    }
    Decision::Withhold(closest.map_or(WithheldReason::NoConsent, |(_, reason)| reason))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use proptest::prelude::*;

    use super::*;

    fn t(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
    }

    fn org(n: u64) -> Oin {
        format!("{:020}", 1_999_000_000_000u64 + n).parse().unwrap()
    }

    fn asker(at: u64) -> Asker {
        Asker {
            org: org(1),
            kind: OrgKind::HousingCorporation,
            purpose: Purpose::EscalationMeeting,
            at: t(at),
        }
    }

    fn consent() -> Basis {
        Basis {
            given_by: GivenBy::Person,
            categories: [FactCategory::EvictionDate].into(),
            recipients: [Recipient::Org(org(1))].into(),
            purposes: [Purpose::EscalationMeeting].into(),
            valid_from: t(100),
            valid_until: Some(t(200)),
            withdrawn_at: None,
        }
    }

    #[test]
    fn a_covering_consent_discloses_within_its_period_only() {
        let bases = [consent()];
        let cat = FactCategory::EvictionDate;
        assert!(
            decide(cat, &bases, &asker(100)).is_disclosed(),
            "from is inclusive"
        );
        assert!(decide(cat, &bases, &asker(199)).is_disclosed());
        assert_eq!(
            decide(cat, &bases, &asker(200)),
            Decision::Withhold(WithheldReason::Expired),
            "until is exclusive"
        );
        assert_eq!(
            decide(cat, &bases, &asker(99)),
            Decision::Withhold(WithheldReason::NotYetValid)
        );
    }

    #[test]
    fn each_reason_names_what_the_closest_basis_missed() {
        use WithheldReason::*;
        let at = asker(150);
        assert_eq!(
            decide(FactCategory::EvictionDate, &[], &at),
            Decision::Withhold(NoConsent)
        );
        assert_eq!(
            decide(FactCategory::RiskSignal, &[consent()], &at),
            Decision::Withhold(CategoryNotCovered)
        );
        let other = Asker {
            org: org(2),
            ..at.clone()
        };
        assert_eq!(
            decide(FactCategory::EvictionDate, &[consent()], &other),
            Decision::Withhold(RecipientNotCovered)
        );
        let by_kind = Basis {
            recipients: [Recipient::Kind(OrgKind::HousingCorporation)].into(),
            ..consent()
        };
        assert!(decide(FactCategory::EvictionDate, &[by_kind], &other).is_disclosed());
        let follow_up = Asker {
            purpose: Purpose::FollowUp,
            ..at.clone()
        };
        assert_eq!(
            decide(FactCategory::EvictionDate, &[consent()], &follow_up),
            Decision::Withhold(PurposeNotCovered)
        );
        let withdrawn = Basis {
            withdrawn_at: Some(t(150)),
            ..consent()
        };
        assert_eq!(
            decide(
                FactCategory::EvictionDate,
                std::slice::from_ref(&withdrawn),
                &at
            ),
            Decision::Withhold(Withdrawn),
            "at the withdrawal itself"
        );
        assert!(
            decide(
                FactCategory::EvictionDate,
                std::slice::from_ref(&withdrawn),
                &asker(149)
            )
            .is_disclosed()
        );
        // The closest basis speaks: a withdrawn covering consent beats an unrelated one.
        assert_eq!(
            decide(
                FactCategory::EvictionDate,
                &[
                    Basis {
                        categories: [FactCategory::Financing].into(),
                        ..consent()
                    },
                    withdrawn
                ],
                &at
            ),
            Decision::Withhold(Withdrawn)
        );
    }

    #[test]
    fn a_legal_basis_covers_without_consent_and_cannot_be_withdrawn() {
        let law = Basis {
            given_by: GivenBy::Law {
                law: "Wvggz".into(),
                article: "8:16".into(),
            },
            ..consent()
        };
        assert!(law.validate().is_ok());
        assert_eq!(
            decide(
                FactCategory::EvictionDate,
                std::slice::from_ref(&law),
                &asker(150)
            ),
            Decision::Disclose { basis: 0 }
        );
        let withdrawn = Basis {
            withdrawn_at: Some(t(120)),
            ..law
        };
        assert_eq!(withdrawn.validate().unwrap_err().field, "withdrawn_at");
    }

    #[test]
    fn validation_names_the_field() {
        let backwards = Basis {
            valid_until: Some(t(50)),
            ..consent()
        };
        assert_eq!(backwards.validate().unwrap_err().field, "valid_until");
        let same = Basis {
            valid_until: Some(t(100)),
            ..consent()
        };
        assert_eq!(same.validate().unwrap_err().field, "valid_until");
        assert_eq!(
            Basis {
                categories: BTreeSet::new(),
                ..consent()
            }
            .validate()
            .unwrap_err()
            .field,
            "categories"
        );
        assert_eq!(
            Basis {
                recipients: BTreeSet::new(),
                ..consent()
            }
            .validate()
            .unwrap_err()
            .field,
            "recipients"
        );
        assert_eq!(
            Basis {
                purposes: BTreeSet::new(),
                ..consent()
            }
            .validate()
            .unwrap_err()
            .field,
            "purposes"
        );
        let no_article = Basis {
            given_by: GivenBy::Law {
                law: "Wvggz".into(),
                article: " ".into(),
            },
            ..consent()
        };
        assert_eq!(no_article.validate().unwrap_err().field, "article");
    }

    #[test]
    fn vocabularies_round_trip_and_refuse_strangers() {
        for c in FactCategory::ALL {
            assert_eq!(c.as_str().parse::<FactCategory>(), Ok(*c));
        }
        for p in Purpose::ALL {
            assert_eq!(p.as_str().parse::<Purpose>(), Ok(*p));
        }
        assert!("diagnosis".parse::<FactCategory>().is_err());
    }

    fn arb_basis() -> impl Strategy<Value = Basis> {
        (
            proptest::sample::subsequence(FactCategory::ALL.to_vec(), 0..=FactCategory::ALL.len()),
            proptest::collection::btree_set(
                prop_oneof![
                    (0u64..3).prop_map(|n| Recipient::Org(org(n))),
                    proptest::sample::select(OrgKind::ALL.to_vec()).prop_map(Recipient::Kind),
                ],
                0..3,
            ),
            proptest::sample::subsequence(Purpose::ALL.to_vec(), 0..=Purpose::ALL.len()),
            0u64..300,
            proptest::option::of(0u64..300),
            proptest::option::of(0u64..300),
            any::<bool>(),
        )
            .prop_map(
                |(categories, recipients, purposes, from, until, withdrawn, law)| Basis {
                    given_by: if law {
                        GivenBy::Law {
                            law: "Wvggz".into(),
                            article: "8:16".into(),
                        }
                    } else {
                        GivenBy::Person
                    },
                    categories: categories.into_iter().collect(),
                    recipients,
                    purposes: purposes.into_iter().collect(),
                    valid_from: t(from),
                    valid_until: until.map(|u| t(from + u + 1)),
                    withdrawn_at: if law { None } else { withdrawn.map(t) },
                },
            )
    }

    fn arb_asker() -> impl Strategy<Value = Asker> {
        (
            0u64..3,
            proptest::sample::select(OrgKind::ALL.to_vec()),
            proptest::sample::select(Purpose::ALL.to_vec()),
            0u64..700,
        )
            .prop_map(|(n, kind, purpose, at)| Asker {
                org: org(n),
                kind,
                purpose,
                at: t(at),
            })
    }

    fn covers(b: &Basis, category: FactCategory, a: &Asker) -> bool {
        b.categories.contains(&category)
            && b.recipients.iter().any(|r| match r {
                Recipient::Org(o) => *o == a.org,
                Recipient::Kind(k) => *k == a.kind,
            })
            && b.purposes.contains(&a.purpose)
            && b.valid_from <= a.at
            && b.valid_until.is_none_or(|u| a.at < u)
            && b.withdrawn_at.is_none_or(|w| a.at < w)
    }

    proptest! {
        #[test]
        fn nothing_is_disclosed_without_a_covering_basis(
            bases in proptest::collection::vec(arb_basis(), 0..4),
            asker in arb_asker(),
            category in proptest::sample::select(FactCategory::ALL.to_vec()),
        ) {
            let decision = decide(category, &bases, &asker);
            let covered = bases.iter().any(|b| covers(b, category, &asker));
            prop_assert_eq!(decision.is_disclosed(), covered);
            if let Decision::Disclose { basis } = decision {
                prop_assert!(covers(&bases[basis], category, &asker));
            }
            if bases.is_empty() {
                prop_assert_eq!(decision, Decision::Withhold(WithheldReason::NoConsent));
            }
        }

        #[test]
        fn withdrawal_and_expiry_are_never_overridden(
            bases in proptest::collection::vec(arb_basis(), 1..4),
            asker in arb_asker(),
            category in proptest::sample::select(FactCategory::ALL.to_vec()),
            which in any::<proptest::sample::Index>(),
            cut in 0u64..700,
            withdraw in any::<bool>(),
        ) {
            let before = decide(category, &bases, &asker);
            let mut after = bases.clone();
            let b = &mut after[which.index(bases.len())];
            if withdraw && matches!(b.given_by, GivenBy::Person) {
                b.withdrawn_at = Some(b.withdrawn_at.map_or(t(cut), |w| w.min(t(cut))));
            } else {
                let end = t(cut).max(b.valid_from + Duration::from_secs(1));
                b.valid_until = Some(b.valid_until.map_or(end, |u| u.min(end)));
            }
            // Narrowing a basis in time never discloses what was withheld.
            prop_assert!(before.is_disclosed() || !decide(category, &after, &asker).is_disclosed());
            // And the asker at or past the cut sees nothing that basis alone covered.
            if after.len() == 1 && asker.at >= t(cut).max(after[0].valid_from + Duration::from_secs(1)) {
                prop_assert!(!decide(category, &after, &asker).is_disclosed());
            }
        }

        #[test]
        fn widening_a_basis_never_hides_what_was_disclosed(
            bases in proptest::collection::vec(arb_basis(), 1..4),
            asker in arb_asker(),
            category in proptest::sample::select(FactCategory::ALL.to_vec()),
            which in any::<proptest::sample::Index>(),
            extra_category in proptest::sample::select(FactCategory::ALL.to_vec()),
            extra_kind in proptest::sample::select(OrgKind::ALL.to_vec()),
            extra_purpose in proptest::sample::select(Purpose::ALL.to_vec()),
            earlier in 0u64..100,
            later in proptest::option::of(0u64..300),
        ) {
            let before = decide(category, &bases, &asker);
            let mut wider = bases.clone();
            let b = &mut wider[which.index(bases.len())];
            b.categories.insert(extra_category);
            b.recipients.insert(Recipient::Kind(extra_kind));
            b.purposes.insert(extra_purpose);
            b.valid_from = b.valid_from.checked_sub(Duration::from_secs(earlier)).unwrap_or(b.valid_from);
            b.valid_until = match (b.valid_until, later) {
                (Some(u), Some(l)) => Some(u + Duration::from_secs(l)),
                _ => None,
            };
            let after = decide(category, &wider, &asker);
            prop_assert!(!before.is_disclosed() || after.is_disclosed());
        }
    }
}
