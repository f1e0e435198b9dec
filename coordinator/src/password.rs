//! Passwords of panel users: Argon2id hashes (PHC strings, a random salt each) made and checked
//! at the edge, never inside `State::apply`, generated initial passwords shown once, and the one
//! policy every password meets (`policy`: the generated ones and those users choose).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Longest password checked (Argon2 takes any length; this bounds the work a request asks for).
pub const MAX_LEN: usize = 256;

/// Shortest password taken.
pub const MIN_LEN: usize = 12;
/// Fewest different characters in a password.
pub const MIN_DISTINCT: usize = 5;

/// Why a password is refused (the message is the answer; it never holds the password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeakPassword {
    #[error("a password has {MIN_LEN} to {MAX_LEN} characters")]
    Length,
    #[error("a password has at least {MIN_DISTINCT} different characters")]
    Repetitive,
    #[error("a password holds no control characters and neither starts nor ends with a space")]
    Characters,
    #[error("a password does not contain the user name")]
    NamesUser,
}

/// The password policy: `MIN_LEN` to `MAX_LEN` characters, `MIN_DISTINCT` different ones, no
/// control characters, no leading or trailing white space (the panel trims what is typed), and
/// not the user's name inside it (names of four characters or more).
pub fn policy(password: &str, user: &str) -> Result<(), WeakPassword> {
    let chars = password.chars().count();
    if chars < MIN_LEN || password.len() > MAX_LEN {
        return Err(WeakPassword::Length);
    }
    if password.chars().any(char::is_control) || password.trim() != password {
        return Err(WeakPassword::Characters);
    }
    let distinct: std::collections::BTreeSet<char> = password.chars().collect();
    if distinct.len() < MIN_DISTINCT {
        return Err(WeakPassword::Repetitive);
    }
    if user.chars().count() >= 4 && password.to_lowercase().contains(&user.to_lowercase()) {
        return Err(WeakPassword::NamesUser);
    }
    Ok(())
}

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

/// A new random password: 24 characters from a 32-letter alphabet without look-alikes (120 bits),
/// meeting `policy` (a draw that does not, all but impossible, is drawn again).
pub fn generate() -> anyhow::Result<String> {
    const ALPHABET: &[u8; 32] = b"abcdefghjkmnpqrstuvwxyz23456789-";
    loop {
        let mut bytes = [0u8; 24];
        getrandom::getrandom(&mut bytes).map_err(|e| anyhow::anyhow!("system randomness unavailable: {e}"))?;
        let password: String = bytes.iter().map(|b| char::from(ALPHABET[usize::from(b % 32)])).collect();
        if policy(&password, "").is_ok() && !password.starts_with('-') && !password.ends_with('-') {
            return Ok(password);
        }
    }
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

    #[test]
    fn generated_passwords_meet_the_policy_and_weak_ones_do_not() {
        for _ in 0..100 {
            let pw = generate().expect("random");
            assert_eq!(policy(&pw, "alice"), Ok(()), "{pw}");
        }
        assert_eq!(policy("correct horse battery", "alice"), Ok(()));
        assert_eq!(policy("short-pw", "alice"), Err(WeakPassword::Length));
        assert_eq!(policy(&"x".repeat(MAX_LEN + 1), "alice"), Err(WeakPassword::Length));
        assert_eq!(policy("abababababababab", "alice"), Err(WeakPassword::Repetitive));
        assert_eq!(policy(" leading space pw", "alice"), Err(WeakPassword::Characters));
        assert_eq!(policy("tab\tinside pass", "alice"), Err(WeakPassword::Characters));
        assert_eq!(policy("my-ALICE-password", "alice"), Err(WeakPassword::NamesUser));
    }
}
