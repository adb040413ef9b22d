//! API keys (pure): the three roles and what each may do, key generation, and the hash the
//! store keeps instead of the secret. The HTTP side (`api/auth.rs`) checks requests with these;
//! the store (`store/keys.rs`) keeps name, role, hash and times.
//!
//! A key is `wk_` followed by 32 random bytes in hex (256 bits of entropy), so a plain SHA-256
//! of it is enough to store: there is nothing to brute-force, and no salt or slow hash is
//! needed (those protect low-entropy passwords). A presented key is hashed and compared with
//! every known hash in constant time ([`digest_eq`]) so that the time an answer takes does not
//! tell an attacker how many leading bytes of some stored hash they matched.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// What a key may do; each role includes the ones before it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Every `GET` (and `/metrics`).
    Read,
    /// Read, plus routing calls, batches, cancel, rerun, events, workflows and arrays.
    Write,
    /// Everything: components, task options, pins, triggers and keys.
    Admin,
}

impl Role {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read" => Ok(Self::Read),
            "write" => Ok(Self::Write),
            "admin" => Ok(Self::Admin),
            _ => Err(format!("unknown role `{s}`: expected read, write or admin")),
        }
    }
}

/// A SHA-256 digest of a key.
pub type KeyDigest = [u8; 32];

/// Prefix of every generated key (lets secret scanners recognise them).
pub const KEY_PREFIX: &str = "wk_";

/// A new random key: `wk_` + 64 hex digits (32 bytes from the OS-seeded CSPRNG).
pub fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{KEY_PREFIX}{}", hex::encode(bytes))
}

/// The digest the store keeps for `key`.
pub fn digest(key: &str) -> KeyDigest {
    Sha256::digest(key.as_bytes()).into()
}

/// The digest as stored (lower-case hex).
pub fn digest_hex(key: &str) -> String {
    hex::encode(digest(key))
}

/// Parses a stored digest.
pub fn parse_digest(hex_text: &str) -> Option<KeyDigest> {
    hex::decode(hex_text).ok()?.try_into().ok()
}

/// Compares two digests in time independent of where they differ: every byte is looked at and
/// the differences are OR-ed together, with no early exit (a `==` on slices stops at the first
/// difference, which leaks through timing how long a matching prefix an attacker found).
pub fn digest_eq(a: &KeyDigest, b: &KeyDigest) -> bool {
    let diff = a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A key name: 1-64 characters of `A-Z a-z 0-9 _ . -`.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        return Err(format!("key name `{name}` must be 1-64 characters of letters, digits, `_`, `.` and `-`"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_parse_back() {
        assert!(Role::Read < Role::Write && Role::Write < Role::Admin);
        for r in [Role::Read, Role::Write, Role::Admin] {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn keys_are_random_prefixed_and_hash_to_a_fixed_digest() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX) && a.len() == 3 + 64, "{a}");
        assert_eq!(parse_digest(&digest_hex(&a)), Some(digest(&a)));
        assert!(digest_eq(&digest(&a), &digest(&a)));
        assert!(!digest_eq(&digest(&a), &digest(&b)));
        let mut one_off = digest(&a);
        one_off[31] ^= 1;
        assert!(!digest_eq(&digest(&a), &one_off));
        assert_eq!(parse_digest("zz"), None);
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("ci-bot_1.x").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a b").is_err());
        assert!(validate_name(&"x".repeat(65)).is_err());
    }
}
