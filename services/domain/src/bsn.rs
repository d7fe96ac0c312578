//! Recognising a citizen service number (BSN) where none may be: identifiers that cross the mesh or
//! enter the audit log must not be able to carry one. A BSN is nine digits (eight when a leading
//! zero was dropped) that pass the eleven-test: 9·d1 + 8·d2 + … + 2·d8 − 1·d9 is divisible by 11
//! (Wet algemene bepalingen burgerservicenummer; the test as the Dutch government's BSN
//! specification states it).

/// Returns true when `digits` (eight or nine ASCII digits) form a number that passes the BSN
/// eleven-test.
pub fn passes_eleven_test(digits: &str) -> bool {
    passes_eleven_test_bytes(digits.as_bytes())
}

fn passes_eleven_test_bytes(bytes: &[u8]) -> bool {
    if !(8..=9).contains(&bytes.len()) || !bytes.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let mut padded = [0u8; 9];
    padded[9 - bytes.len()..].copy_from_slice(bytes);
    let digits = padded.map(|b| i64::from(b.saturating_sub(b'0')));
    if digits.iter().all(|&d| d == 0) {
        return false;
    }
    let sum: i64 = digits[..8]
        .iter()
        .zip((2..=9).rev())
        .map(|(d, w)| d * w)
        .sum::<i64>()
        - digits[8];
    sum % 11 == 0
}

/// Returns true when `text` holds a run of exactly eight or nine digits (bounded by non-digits or
/// the ends) that passes the eleven-test, so it could be a BSN.
pub fn contains_bsn_shaped(text: &str) -> bool {
    // By byte: every identifier of every audit entry passes here, and a byte of a multi-byte
    // character is never an ASCII digit.
    let bytes = text.as_bytes();
    let mut run = 0;
    for (i, b) in bytes.iter().enumerate() {
        if b.is_ascii_digit() {
            run += 1;
        } else {
            if (8..=9).contains(&run) && passes_eleven_test_bytes(&bytes[i - run..i]) {
                return true;
            }
            run = 0;
        }
    }
    (8..=9).contains(&run) && passes_eleven_test_bytes(&bytes[bytes.len() - run..])
}

/// Checks a case reference: 8–64 characters of ASCII letters, digits, `-` and `_`, holding no
/// number that could be a BSN. Returns why not.
pub fn check_case_ref(value: &str) -> Result<(), &'static str> {
    if !(8..=64).contains(&value.len()) {
        return Err("must be 8 to 64 characters");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("may hold only letters, digits, `-` and `_`");
    }
    if contains_bsn_shaped(value) {
        return Err("holds a number that could be a citizen service number");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn known_test_numbers() {
        // 123456782 is the customary fictional example: 9+16+21+24+25+24+21+16-2 = 154 = 14·11.
        assert!(passes_eleven_test("123456782"));
        assert!(!passes_eleven_test("123456789"));
        assert!(passes_eleven_test("011111112") && passes_eleven_test("11111112"));
        assert!(!passes_eleven_test("000000000"));
        assert!(!passes_eleven_test("12345678a"));
    }

    #[test]
    fn finds_a_bsn_inside_a_token_but_not_inside_longer_numbers() {
        assert!(contains_bsn_shaped("case-123456782"));
        assert!(contains_bsn_shaped("bsn:123456782/x"));
        assert!(!contains_bsn_shaped("case-1234567820"));
        assert!(!contains_bsn_shaped("00000001999000001000"));
        assert!(!contains_bsn_shaped("emp-0042"));
    }

    proptest! {
        #[test]
        fn every_number_passing_the_test_is_found_wherever_it_stands(
            n in 10_000_000u32..999_999_999,
            before in "[a-z:_-]{0,6}",
            after in "[a-z:_-]{0,6}",
        ) {
            let digits = format!("{n:09}");
            let text = format!("{before}{digits}{after}");
            prop_assert_eq!(contains_bsn_shaped(&text), passes_eleven_test(&digits));
        }

        #[test]
        fn never_panics(text in "\\PC{0,40}") {
            let _ = contains_bsn_shaped(&text);
        }

        #[test]
        fn the_byte_scan_finds_what_a_scan_by_character_finds(
            text in "([0-9]{1,10}|\\PC{1,3}|[a-z-]{1,4}){0,8}",
        ) {
            let by_char = text
                .split(|c: char| !c.is_ascii_digit())
                .any(passes_eleven_test);
            prop_assert_eq!(contains_bsn_shaped(&text), by_char);
        }
    }
}
