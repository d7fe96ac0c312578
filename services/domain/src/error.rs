//! Errors from parsing domain values at the edge.

/// A value that does not have the shape a domain type requires.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// An organisation id that is not 20 ASCII digits.
    #[error("organisation id must be 20 digits, got {len} characters")]
    OinShape {
        /// Length of the rejected input in characters.
        len: usize,
    },
    /// An organisation id that has the right length but a non-digit character.
    #[error("organisation id must be 20 digits, found a non-digit at position {position}")]
    OinDigit {
        /// Zero-based position of the first non-digit.
        position: usize,
    },
    /// An organisation kind that is not one of the known kinds.
    #[error("unknown organisation kind `{0}`")]
    OrgKind(String),
    /// A value outside a closed vocabulary.
    #[error("unknown {what} `{value}`")]
    Unknown {
        /// Which vocabulary.
        what: &'static str,
        /// The rejected value (at most 64 characters of it).
        value: String,
    },
}

/// A value that breaks a domain rule, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {reason}")]
pub struct Invalid {
    /// The field, as the contract names it.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl Invalid {
    /// Makes the error for `field`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}
