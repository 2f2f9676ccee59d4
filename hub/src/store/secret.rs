//! Credentials: generating, parsing and checking `<id>.<secret>` tokens.
//!
//! Device tokens and API keys share one scheme, kept here so both tables and
//! every backend treat them alike. The id is 16 lowercase hex characters (8
//! random bytes) and is the row's public key; the secret is 32 random bytes
//! in base64url without padding. Only SHA-256 of the secret's bytes is stored,
//! and a presented secret is compared with its stored hash in constant time.
//! Nothing in this file logs, and the one type that holds a secret,
//! [`Credential`], redacts it in `Debug`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Length of a public id in hex characters.
pub(crate) const ID_LEN: usize = 16;
/// Length of a secret in bytes before encoding.
const SECRET_BYTES: usize = 32;
/// Length of the base64url (no padding) encoding of [`SECRET_BYTES`].
const SECRET_LEN: usize = 43;

/// SHA-256 of a secret, as stored in the database.
pub(crate) type SecretHash = [u8; 32];

/// A freshly generated credential: what to store and what to show once.
pub(crate) struct Credential {
    /// The public id (16 lowercase hex characters).
    pub id: String,
    /// `<id>.<secret>`: handed to the owner once, never stored.
    pub token: String,
    /// SHA-256 of the secret's bytes: the only part that is stored.
    pub hash: SecretHash,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("id", &self.id)
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// A new random id and secret from the thread-local CSPRNG (ChaCha seeded by the OS).
    pub fn generate() -> Credential {
        let mut rng = rand::rng();
        let mut id_bytes = [0u8; ID_LEN / 2];
        rng.fill_bytes(&mut id_bytes);
        let mut secret = [0u8; SECRET_BYTES];
        rng.fill_bytes(&mut secret);
        let id = hex::encode(id_bytes);
        let token = format!("{id}.{}", URL_SAFE_NO_PAD.encode(secret));
        Credential {
            id,
            token,
            hash: hash_secret(&secret),
        }
    }
}

/// A presented token split into its id and the hash of its secret.
pub(crate) struct Presented<'a> {
    /// The id part, already checked to be well-formed.
    pub id: &'a str,
    /// SHA-256 of the decoded secret.
    pub hash: SecretHash,
}

/// Splits and checks the shape of `<id>.<secret>`; None when malformed.
///
/// Well-formedness is checked before any database access, so garbage never
/// reaches a query.
pub(crate) fn parse(token: &str) -> Option<Presented<'_>> {
    let (id, secret) = token.split_once('.')?;
    if !is_valid_id(id) || secret.len() != SECRET_LEN {
        return None;
    }
    let mut bytes = [0u8; SECRET_BYTES + 3];
    let n = URL_SAFE_NO_PAD.decode_slice(secret, &mut bytes).ok()?;
    if n != SECRET_BYTES {
        return None;
    }
    Some(Presented {
        id,
        hash: hash_secret(&bytes[..SECRET_BYTES]),
    })
}

/// True for 16 lowercase hex characters.
pub(crate) fn is_valid_id(id: &str) -> bool {
    id.len() == ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Constant-time comparison of a presented hash with the stored one; a stored
/// value of the wrong length never matches.
pub(crate) fn matches(presented: &SecretHash, stored: &[u8]) -> bool {
    bool::from(presented.as_slice().ct_eq(stored))
}

fn hash_secret(secret: &[u8]) -> SecretHash {
    Sha256::digest(secret).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_token_parses_and_matches_its_hash() {
        let cred = Credential::generate();
        assert!(is_valid_id(&cred.id));
        let presented = parse(&cred.token).expect("a generated token is well-formed");
        assert_eq!(presented.id, cred.id);
        assert!(matches(&presented.hash, &cred.hash));
        let other = Credential::generate();
        assert_ne!(other.id, cred.id);
        assert!(!matches(&presented.hash, &other.hash));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let cred = Credential::generate();
        let (id, secret) = cred.token.split_once('.').expect("has a dot");
        for bad in [
            String::new(),
            id.to_string(),
            format!("{id}."),
            format!(".{secret}"),
            format!("{}.{secret}", id.to_uppercase()),
            format!("{}.{secret}", &id[1..]),
            format!("{id}.{}", &secret[1..]),
            format!("{id}.{secret}A"),
            format!("{id}.{}=", &secret[..42]),
            format!("{id}.{}+", &secret[..42]),
            format!("{id}.{secret}.x"),
        ] {
            assert!(parse(&bad).is_none(), "accepted {bad:?}");
        }
    }

    #[test]
    fn stored_hash_of_wrong_length_never_matches() {
        let cred = Credential::generate();
        let presented = parse(&cred.token).expect("well-formed");
        assert!(!matches(&presented.hash, &cred.hash[..31]));
        assert!(!matches(&presented.hash, &[]));
    }

    #[test]
    fn debug_does_not_show_the_token() {
        let cred = Credential::generate();
        let shown = format!("{cred:?}");
        let secret = cred.token.split_once('.').expect("has a dot").1;
        assert!(!shown.contains(secret));
        assert!(shown.contains(&cred.id));
    }
}
