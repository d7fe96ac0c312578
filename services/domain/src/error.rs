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
}
