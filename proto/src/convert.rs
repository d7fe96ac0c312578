//! Conversions between protobuf messages and domain types. Every error names the field it is about,
//! so a handler can turn it into `INVALID_ARGUMENT` without further work.

use doorzet_domain::{Oin, OrgKind};

use crate::v1;

/// A protobuf value that does not convert to its domain type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct ConvertError {
    /// Name of the offending field, as in the `.proto` file.
    pub field: &'static str,
    /// Why it was rejected; never echoes personal data.
    pub reason: String,
}

impl ConvertError {
    /// Makes an error for `field`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// Parses an organisation id carried in `field`.
pub fn oin(field: &'static str, value: &str) -> Result<Oin, ConvertError> {
    value
        .parse()
        .map_err(|e: doorzet_domain::ParseError| ConvertError::new(field, e.to_string()))
}

impl From<OrgKind> for v1::OrganisationKind {
    fn from(kind: OrgKind) -> Self {
        match kind {
            OrgKind::Municipality => Self::Municipality,
            OrgKind::MentalHealthInstitution => Self::MentalHealthInstitution,
            OrgKind::CareOffice => Self::CareOffice,
            OrgKind::HealthInsurer => Self::HealthInsurer,
            OrgKind::CareAndSafetyHouse => Self::CareAndSafetyHouse,
            OrgKind::HousingCorporation => Self::HousingCorporation,
            OrgKind::Police => Self::Police,
            OrgKind::PublicProsecutor => Self::PublicProsecutor,
            OrgKind::ClientSupport => Self::ClientSupport,
            OrgKind::Other => Self::Other,
        }
    }
}

/// Converts the wire value of an `OrganisationKind` field.
pub fn org_kind(field: &'static str, value: i32) -> Result<OrgKind, ConvertError> {
    use v1::OrganisationKind as Pb;
    let pb = Pb::try_from(value)
        .map_err(|_| ConvertError::new(field, format!("unknown value {value}")))?;
    Ok(match pb {
        Pb::Unspecified => return Err(ConvertError::new(field, "must be set")),
        Pb::Municipality => OrgKind::Municipality,
        Pb::MentalHealthInstitution => OrgKind::MentalHealthInstitution,
        Pb::CareOffice => OrgKind::CareOffice,
        Pb::HealthInsurer => OrgKind::HealthInsurer,
        Pb::CareAndSafetyHouse => OrgKind::CareAndSafetyHouse,
        Pb::HousingCorporation => OrgKind::HousingCorporation,
        Pb::Police => OrgKind::Police,
        Pb::PublicProsecutor => OrgKind::PublicProsecutor,
        Pb::ClientSupport => OrgKind::ClientSupport,
        Pb::Other => OrgKind::Other,
    })
}

/// Parses a value of a closed vocabulary carried in `field`.
pub fn vocab<T>(field: &'static str, value: &str) -> Result<T, ConvertError>
where
    T: std::str::FromStr<Err = doorzet_domain::ParseError>,
{
    value
        .parse()
        .map_err(|e: doorzet_domain::ParseError| ConvertError::new(field, e.to_string()))
}

/// Converts an optional timestamp carried in `field`.
pub fn time(
    field: &'static str,
    value: Option<prost_types::Timestamp>,
) -> Result<Option<std::time::SystemTime>, ConvertError> {
    value
        .map(|t| {
            std::time::SystemTime::try_from(t)
                .map_err(|_| ConvertError::new(field, "is not a valid time"))
        })
        .transpose()
}

impl From<doorzet_domain::disclosure::WithheldReason> for v1::WithheldReason {
    fn from(reason: doorzet_domain::disclosure::WithheldReason) -> Self {
        use doorzet_domain::disclosure::WithheldReason as R;
        match reason {
            R::NoConsent => Self::NoConsent,
            R::CategoryNotCovered => Self::CategoryNotCovered,
            R::RecipientNotCovered => Self::RecipientNotCovered,
            R::PurposeNotCovered => Self::PurposeNotCovered,
            R::Withdrawn => Self::ConsentWithdrawn,
            R::Expired => Self::Expired,
            R::NotYetValid => Self::NotYetValid,
        }
    }
}

impl From<doorzet_domain::lifecycle::State> for v1::EscalationState {
    fn from(state: doorzet_domain::lifecycle::State) -> Self {
        use doorzet_domain::lifecycle::State as S;
        match state {
            S::Registered => Self::Registered,
            S::Accepted => Self::Accepted,
            S::Rejected => Self::Rejected,
            S::ParticipantsResolved => Self::ParticipantsResolved,
            S::MeetingPlanned => Self::MeetingPlanned,
            S::Decided => Self::Decided,
            S::Monitoring => Self::Monitoring,
            S::Closed => Self::Closed,
        }
    }
}

/// The lifecycle state of a contract state carried in `field`.
pub fn escalation_state(
    field: &'static str,
    value: i32,
) -> Result<doorzet_domain::lifecycle::State, ConvertError> {
    use doorzet_domain::lifecycle::State as S;
    Ok(
        match v1::EscalationState::try_from(value)
            .map_err(|_| ConvertError::new(field, "is not an escalation state"))?
        {
            v1::EscalationState::Unspecified => {
                return Err(ConvertError::new(field, "must be set"));
            }
            v1::EscalationState::Registered => S::Registered,
            v1::EscalationState::Accepted => S::Accepted,
            v1::EscalationState::Rejected => S::Rejected,
            v1::EscalationState::ParticipantsResolved => S::ParticipantsResolved,
            v1::EscalationState::MeetingPlanned => S::MeetingPlanned,
            v1::EscalationState::Decided => S::Decided,
            v1::EscalationState::Monitoring => S::Monitoring,
            v1::EscalationState::Closed => S::Closed,
        },
    )
}

impl From<doorzet_domain::lifecycle::Happened> for v1::EscalationEventType {
    fn from(happened: doorzet_domain::lifecycle::Happened) -> Self {
        use doorzet_domain::lifecycle::Happened as H;
        match happened {
            H::Accepted => Self::Accepted,
            H::Rejected => Self::Rejected,
            H::ParticipantsResolved => Self::ParticipantsResolved,
            H::MeetingPlanned => Self::MeetingPlanned,
            H::Decided => Self::Decided,
            H::Monitoring => Self::Monitoring,
            H::Escalated => Self::Escalated,
            H::ScaledDown => Self::ScaledDown,
            H::TermPassedAlert => Self::DeadlinePassed,
            H::FollowUpDue => Self::FollowUpDue,
            H::Closed => Self::Closed,
            H::Reopened => Self::Reopened,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escalation_states_round_trip() {
        for state in doorzet_domain::lifecycle::State::ALL {
            let pb: v1::EscalationState = (*state).into();
            assert_eq!(escalation_state("state", pb as i32), Ok(*state));
        }
        assert!(escalation_state("state", 0).is_err());
    }

    #[test]
    fn org_kind_round_trips_and_rejects_unspecified() {
        for kind in OrgKind::ALL {
            let pb: v1::OrganisationKind = kind.into();
            assert_eq!(org_kind("kind", pb as i32), Ok(kind));
        }
        let err = org_kind("member.kind", 0).unwrap_err();
        assert_eq!(err.field, "member.kind");
        assert!(org_kind("kind", 999).is_err());
    }

    #[test]
    fn oin_error_names_field() {
        let err = oin("org_id", "12").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid org_id: organisation id must be 20 digits, got 2 characters"
        );
    }
}
