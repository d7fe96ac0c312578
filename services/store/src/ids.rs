//! Record ids the services make: random ones, and time-ordered ones for records written in a
//! stream (a new id sorts after those made before it, so a B-tree keyed by it grows at its end,
//! and a transaction that writes many rows dirties a few pages at the end instead of one random
//! page per row). Letters only, so no run of digits in them can look like a BSN to the audit
//! log's check.

use rand::Rng;

/// A random id `prefix-` followed by 20 lowercase letters (about 94 bits).
pub fn random(prefix: &str) -> String {
    let mut rng = rand::thread_rng();
    let letters: String = (0..20)
        .map(|_| (b'a' + rng.gen_range(0..26u8)) as char)
        .collect();
    format!("{prefix}-{letters}")
}

/// A time-ordered id `prefix-` followed by 22 lowercase letters: the milliseconds since 1970 in
/// 10 base-26 letters, then 12 random letters (about 56 bits, for ids made in one millisecond).
pub fn ordered(prefix: &str) -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    ordered_at(prefix, millis)
}

fn ordered_at(prefix: &str, millis: u64) -> String {
    let mut id = String::with_capacity(prefix.len() + 23);
    id.push_str(prefix);
    id.push('-');
    let mut time = [b'a'; 10];
    let mut rest = millis;
    for letter in time.iter_mut().rev() {
        *letter = b'a' + (rest % 26) as u8;
        rest /= 26;
    }
    id.extend(time.iter().map(|b| *b as char));
    let mut rng = rand::thread_rng();
    id.extend((0..12).map(|_| (b'a' + rng.gen_range(0..26u8)) as char));
    id
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn random_ids_are_letters_and_distinct() {
        let a = random("fact");
        assert!(a.starts_with("fact-") && a.len() == 25);
        assert!(a[5..].bytes().all(|b| b.is_ascii_lowercase()));
        assert_ne!(a, random("fact"));
    }

    #[test]
    fn ordered_ids_are_letters_and_distinct() {
        let a = ordered("disc");
        assert!(a.starts_with("disc-") && a.len() == 27, "{a}");
        assert!(a[5..].bytes().all(|b| b.is_ascii_lowercase()));
        assert_ne!(a, ordered("disc"));
    }

    proptest! {
        #[test]
        fn a_later_millisecond_sorts_later(a in 0u64..(1 << 46), step in 1u64..1_000_000) {
            let (x, y) = (ordered_at("disc", a), ordered_at("disc", a + step));
            prop_assert!(x < y, "{} then {}", x, y);
        }
    }
}
