//! Passwords of panel users: Argon2id hashes (PHC strings, a random salt each) made and checked
//! at the edge, never inside `State::apply`, and generated initial passwords shown once.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Longest password checked (Argon2 takes any length; this bounds the work a request asks for).
pub const MAX_LEN: usize = 256;

/// The Argon2id PHC hash of `password` with a fresh random salt (argon2's default cost:
/// 19 MiB, 2 passes, 1 lane — OWASP's minimum for Argon2id).
pub fn hash(password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| anyhow::anyhow!("system randomness unavailable: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?
        .to_string())
}

/// Whether `password` matches the stored PHC `hash` (constant time inside argon2).
pub fn verify(hash: &str, password: &str) -> bool {
    if password.len() > MAX_LEN {
        return false;
    }
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// A hash no password matches, checked for unknown users so that they take as long as known ones.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash("berqenas unknown user").unwrap_or_default())
}

/// A new random password: 24 characters from a 32-letter alphabet without look-alikes (120 bits).
pub fn generate() -> anyhow::Result<String> {
    const ALPHABET: &[u8; 32] = b"abcdefghjkmnpqrstuvwxyz23456789-";
    let mut bytes = [0u8; 24];
    getrandom::getrandom(&mut bytes).map_err(|e| anyhow::anyhow!("system randomness unavailable: {e}"))?;
    Ok(bytes.iter().map(|b| char::from(ALPHABET[usize::from(b % 32)])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_matches_only_its_password() {
        let pw = generate().expect("random");
        assert_eq!(pw.len(), 24);
        let h = hash(&pw).expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(!h.contains(&pw));
        assert!(verify(&h, &pw));
        assert!(!verify(&h, "wrong"));
        assert!(!verify("not a phc string", &pw));
        assert_ne!(hash(&pw).expect("hash"), h, "a fresh salt each time");
        assert!(!verify(dummy_hash(), &pw));
    }
}
