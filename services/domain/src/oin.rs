//! The Organisatie-identificatienummer (OIN): the 20-digit identifier the Dutch government PKI puts
//! in a certificate's subject serialNumber, and the name of every mesh member.

use std::fmt;
use std::str::FromStr;

use crate::ParseError;

/// A 20-digit organisation identifier, parsed once at the edge.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Oin([u8; 20]);

impl Oin {
    /// Returns the identifier as a string slice of 20 ASCII digits.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits are ever stored, so this cannot fail.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl FromStr for Oin {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        let digits: [u8; 20] = bytes.try_into().map_err(|_| ParseError::OinShape {
            len: s.chars().count(),
        })?;
        if let Some(position) = digits.iter().position(|b| !b.is_ascii_digit()) {
            return Err(ParseError::OinDigit { position });
        }
        Ok(Self(digits))
    }
}

impl TryFrom<String> for Oin {
    type Error = ParseError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<Oin> for String {
    fn from(value: Oin) -> Self {
        value.as_str().to_owned()
    }
}

impl serde::Serialize for Oin {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Oin {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Oin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Oin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Oin({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_twenty_digits() {
        let oin: Oin = "00000001234567890000".parse().unwrap();
        assert_eq!(oin.as_str(), "00000001234567890000");
    }

    #[test]
    fn rejects_wrong_length_and_non_digits() {
        assert_eq!("123".parse::<Oin>(), Err(ParseError::OinShape { len: 3 }));
        assert_eq!(
            "0000000123456789000X".parse::<Oin>(),
            Err(ParseError::OinDigit { position: 19 })
        );
        assert!("０000000123456789000".parse::<Oin>().is_err());
    }

    proptest! {
        #[test]
        fn round_trips_every_twenty_digit_string(s in "[0-9]{20}") {
            let oin: Oin = s.parse().unwrap();
            prop_assert_eq!(oin.to_string(), s);
        }

        #[test]
        fn rejects_everything_else(s in "\\PC{0,30}") {
            let is_valid = s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
            prop_assert_eq!(s.parse::<Oin>().is_ok(), is_valid);
        }
    }
}
