//! Identifiers the node makes (random, letters only, so no run of digits in them can look like a
//! BSN to the audit log's check) and the shape of a case reference.

pub use doorzet_store::ids::{ordered, random};

/// The id of a record whose caller named the request (`request_id`), so that a retry lands on the
/// record the first attempt made: `prefix-k` and 24 letters of a hash of the request id.
pub fn keyed(prefix: &str, request_id: &str) -> Result<String, &'static str> {
    use sha2::{Digest, Sha256};
    check_token(request_id)?;
    let digest = Sha256::digest(request_id.as_bytes());
    let letters: String = digest[..12]
        .iter()
        .flat_map(|b| [b >> 4, b & 0xf])
        .map(|n| (b'a' + n) as char)
        .collect();
    Ok(format!("{prefix}-k{letters}"))
}

pub use doorzet_domain::bsn::check_case_ref;

/// Checks free identifiers supplied by callers (local ids, person ids): 1–64 printable characters
/// without control characters.
pub fn check_token(value: &str) -> Result<(), &'static str> {
    if value.is_empty() || value.chars().count() > 64 {
        return Err("must be 1 to 64 characters");
    }
    if value.chars().any(char::is_control) {
        return Err("must not hold control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn case_refs_refuse_bsns_and_odd_characters() {
        assert!(check_case_ref("case-7f3a9c2e").is_ok());
        assert!(check_case_ref("case-123456782").is_err());
        assert!(check_case_ref("short").is_err());
        assert!(check_case_ref("case with space").is_err());
    }

    proptest! {
        #[test]
        fn the_check_never_panics(s in "\\PC{0,100}") {
            let _ = check_case_ref(&s);
            let _ = check_token(&s);
        }
    }
}
