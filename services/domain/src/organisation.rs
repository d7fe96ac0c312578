//! Kinds of organisation in the mesh (see DOMAIN.md, "Actors").

use std::fmt;
use std::str::FromStr;

use crate::ParseError;

/// What kind of organisation a mesh member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OrgKind {
    /// Gemeente.
    Municipality,
    /// GGZ-instelling.
    MentalHealthInstitution,
    /// Zorgkantoor (Wlz).
    CareOffice,
    /// Zorgverzekeraar (Zvw).
    HealthInsurer,
    /// Zorg- en Veiligheidshuis.
    CareAndSafetyHouse,
    /// Woningcorporatie.
    HousingCorporation,
    /// Politie.
    Police,
    /// Openbaar Ministerie.
    PublicProsecutor,
    /// Cliëntondersteuning.
    ClientSupport,
    /// Any other partner.
    Other,
}

impl OrgKind {
    /// Every kind, in contract order.
    pub const ALL: [OrgKind; 10] = [
        Self::Municipality,
        Self::MentalHealthInstitution,
        Self::CareOffice,
        Self::HealthInsurer,
        Self::CareAndSafetyHouse,
        Self::HousingCorporation,
        Self::Police,
        Self::PublicProsecutor,
        Self::ClientSupport,
        Self::Other,
    ];

    /// Returns the snake_case name used in configuration files and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Municipality => "municipality",
            Self::MentalHealthInstitution => "mental_health_institution",
            Self::CareOffice => "care_office",
            Self::HealthInsurer => "health_insurer",
            Self::CareAndSafetyHouse => "care_and_safety_house",
            Self::HousingCorporation => "housing_corporation",
            Self::Police => "police",
            Self::PublicProsecutor => "public_prosecutor",
            Self::ClientSupport => "client_support",
            Self::Other => "other",
        }
    }
}

impl FromStr for OrgKind {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| ParseError::OrgKind(s.to_owned()))
    }
}

impl fmt::Display for OrgKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for OrgKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for OrgKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_round_trip() {
        for kind in OrgKind::ALL {
            assert_eq!(kind.as_str().parse::<OrgKind>(), Ok(kind));
        }
        assert_eq!(
            "ministry".parse::<OrgKind>(),
            Err(ParseError::OrgKind("ministry".into()))
        );
    }

    proptest! {
        #[test]
        fn parse_accepts_only_known_names(s in "[a-z_]{0,30}") {
            let known = OrgKind::ALL.iter().any(|k| k.as_str() == s);
            prop_assert_eq!(s.parse::<OrgKind>().is_ok(), known);
        }
    }
}
