//! The participation grant: what the coordinator's signed grant says, and whether it lets an
//! organisation ask a node about a case now. The signature is checked where the keys are (the
//! node); the claims are judged here.
//!
//! A grant is valid for exactly its stated period, `nbf <= now < exp`: no leeway extends `exp`
//! (the coordinator may date `nbf` a little in the past for clock skew).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::Oin;
use crate::disclosure::Purpose;

/// The `typ` header of a grant, so no other token of the coordinator's passes as one.
pub const GRANT_TYPE: &str = "doorzet-grant+jwt";

/// The longest period a grant may cover.
pub const MAX_GRANT_PERIOD: Duration = Duration::from_secs(90 * 24 * 3600);

/// A grant's claims as they travel (JSON in a JWT signed with one of the coordinator's keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantClaims {
    /// The coordinator's organisation id.
    pub iss: String,
    /// Grant id, unique per grant.
    pub jti: String,
    /// The escalation.
    pub escalation_id: String,
    /// The case reference (made by the registering node; never a BSN or name).
    pub case_ref: String,
    /// The tier the escalation is at.
    pub tier: u32,
    /// Organisation ids of the participants it covers.
    pub participants: Vec<String>,
    /// The purpose, from the closed vocabulary.
    pub purpose: String,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Not before, Unix seconds.
    pub nbf: u64,
    /// Expires at, Unix seconds (exclusive).
    pub exp: u64,
}

/// A grant that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Grant id.
    pub id: String,
    /// The escalation.
    pub escalation_id: String,
    /// The case reference.
    pub case_ref: String,
    /// The tier.
    pub tier: u32,
    /// The purpose.
    pub purpose: Purpose,
}

/// Why a grant does not let this caller ask about this case now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantRefusal {
    /// Not issued by the coordinator.
    #[error("grant is not issued by the coordinator")]
    Issuer,
    /// The caller is not a participant.
    #[error("grant does not name the calling organisation")]
    NotParticipant,
    /// The grant is about another case.
    #[error("grant is for another case reference")]
    OtherCase,
    /// Before `nbf`.
    #[error("grant is not valid yet")]
    NotYetValid,
    /// At or after `exp`.
    #[error("grant has expired")]
    Expired,
    /// Claims out of shape.
    #[error("grant claim `{0}` is invalid")]
    Claim(&'static str),
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// Judges `claims` (already signature-checked) for `caller` asking about `case_ref` at `now`.
pub fn check(
    claims: &GrantClaims,
    coordinator: &Oin,
    caller: &Oin,
    case_ref: &str,
    now: SystemTime,
) -> Result<Grant, GrantRefusal> {
    if claims.iss != coordinator.as_str() {
        return Err(GrantRefusal::Issuer);
    }
    let purpose = claims
        .purpose
        .parse::<Purpose>()
        .map_err(|_| GrantRefusal::Claim("purpose"))?;
    if claims.exp <= claims.nbf || claims.exp - claims.nbf > MAX_GRANT_PERIOD.as_secs() {
        return Err(GrantRefusal::Claim("exp"));
    }
    if claims.jti.is_empty() || claims.jti.len() > 128 {
        return Err(GrantRefusal::Claim("jti"));
    }
    let now = secs(now);
    if now < claims.nbf {
        return Err(GrantRefusal::NotYetValid);
    }
    if now >= claims.exp {
        return Err(GrantRefusal::Expired);
    }
    if claims.case_ref != case_ref {
        return Err(GrantRefusal::OtherCase);
    }
    if !claims.participants.iter().any(|p| p == caller.as_str()) {
        return Err(GrantRefusal::NotParticipant);
    }
    Ok(Grant {
        id: claims.jti.clone(),
        escalation_id: claims.escalation_id.clone(),
        case_ref: claims.case_ref.clone(),
        tier: claims.tier,
        purpose,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn oin(n: u64) -> Oin {
        format!("{:020}", 1_999_000_000_000u64 + n).parse().unwrap()
    }

    fn claims() -> GrantClaims {
        GrantClaims {
            iss: oin(0).to_string(),
            jti: "g-1".into(),
            escalation_id: "esc-1".into(),
            case_ref: "case-abc".into(),
            tier: 2,
            participants: vec![oin(1).to_string(), oin(2).to_string()],
            purpose: "escalation_meeting".into(),
            iat: 1_000,
            nbf: 1_000,
            exp: 2_000,
        }
    }

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn a_participant_asking_about_the_case_within_the_period_passes() {
        let g = check(&claims(), &oin(0), &oin(1), "case-abc", at(1_000)).unwrap();
        assert_eq!(g.purpose, Purpose::EscalationMeeting);
        assert_eq!(g.tier, 2);
    }

    #[test]
    fn every_refusal_has_its_reason() {
        let c = claims();
        assert_eq!(
            check(&c, &oin(9), &oin(1), "case-abc", at(1_500)),
            Err(GrantRefusal::Issuer)
        );
        assert_eq!(
            check(&c, &oin(0), &oin(3), "case-abc", at(1_500)),
            Err(GrantRefusal::NotParticipant)
        );
        assert_eq!(
            check(&c, &oin(0), &oin(1), "case-xyz", at(1_500)),
            Err(GrantRefusal::OtherCase)
        );
        assert_eq!(
            check(&c, &oin(0), &oin(1), "case-abc", at(999)),
            Err(GrantRefusal::NotYetValid)
        );
        assert_eq!(
            check(&c, &oin(0), &oin(1), "case-abc", at(2_000)),
            Err(GrantRefusal::Expired),
            "exp is exclusive, no leeway"
        );
        let bad = GrantClaims {
            purpose: "curiosity".into(),
            ..claims()
        };
        assert_eq!(
            check(&bad, &oin(0), &oin(1), "case-abc", at(1_500)),
            Err(GrantRefusal::Claim("purpose"))
        );
        let forever = GrantClaims {
            exp: 1_000 + MAX_GRANT_PERIOD.as_secs() + 1,
            ..claims()
        };
        assert_eq!(
            check(&forever, &oin(0), &oin(1), "case-abc", at(1_500)),
            Err(GrantRefusal::Claim("exp"))
        );
    }

    proptest! {
        #[test]
        fn a_grant_passes_exactly_within_its_period(nbf in 0u64..10_000, len in 1u64..10_000, now in 0u64..30_000) {
            let c = GrantClaims { nbf, exp: nbf + len, ..claims() };
            let ok = check(&c, &oin(0), &oin(1), "case-abc", at(now)).is_ok();
            prop_assert_eq!(ok, nbf <= now && now < nbf + len);
        }
    }
}
