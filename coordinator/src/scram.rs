//! Database passwords: the coordinator makes an ASCII password, shows it once, and keeps only
//! what the tenant's database engine stores: for PostgreSQL the SCRAM-SHA-256 verifier
//! (`SCRAM-SHA-256$4096:salt$StoredKey:ServerKey`, RFC 5802/7677, the form PostgreSQL accepts in
//! `CREATE ROLE … PASSWORD`), for SQL Server the login hash (`0x0200‖salt‖SHA-512`, the form
//! `CREATE LOGIN … WITH PASSWORD = 0x… HASHED` accepts).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

const ITERATIONS: u32 = 4096;

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("hmac takes any key"));
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA256 with one output block (`Hi` in RFC 5802).
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut block = salt.to_vec();
    block.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &block);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        for (o, x) in out.iter_mut().zip(u.iter()) {
            *o ^= x;
        }
    }
    out
}

/// The verifier of `password` with `salt`. Passwords made here are ASCII letters and digits, for
/// which SASLprep changes nothing.
pub fn verifier(password: &str, salt: &[u8; 16]) -> String {
    let salted = hi(password.as_bytes(), salt, ITERATIONS);
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac(&salted, b"Server Key");
    format!(
        "SCRAM-SHA-256${ITERATIONS}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key),
        STANDARD.encode(server_key)
    )
}

/// SQL Server 2012+ login password hash: `0x0200`, a 4-byte salt, and SHA-512 of the password
/// in UTF-16LE followed by the salt; upper-case hex with `0x`, as `LOGINPROPERTY(…,
/// 'PasswordHash')` shows it.
pub fn mssql_hash(password: &str, salt: &[u8; 4]) -> String {
    let mut h = Sha512::new();
    for unit in password.encode_utf16() {
        h.update(unit.to_le_bytes());
    }
    h.update(salt);
    format!("0x0200{}{}", hex::encode_upper(salt), hex::encode_upper(h.finalize()))
}

/// A new random password (24 letters and digits, ~143 bits) and what `engine` stores of it.
pub fn new_password_for(engine: crate::state::tenant::DbType) -> anyhow::Result<(String, String)> {
    let (password, scram) = new_password()?;
    match engine {
        crate::state::tenant::DbType::Postgres => Ok((password, scram)),
        crate::state::tenant::DbType::Mssql => {
            let mut salt = [0u8; 4];
            getrandom::getrandom(&mut salt).map_err(|e| anyhow::anyhow!("system randomness unavailable: {e}"))?;
            let hash = mssql_hash(&password, &salt);
            Ok((password, hash))
        }
    }
}

/// A new random password (24 letters and digits, ~143 bits) and its verifier.
pub fn new_password() -> anyhow::Result<(String, String)> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut raw = [0u8; 24];
    getrandom::getrandom(&mut raw).map_err(|e| anyhow::anyhow!("system randomness unavailable: {e}"))?;
    let password: String = raw.iter().map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()])).collect();
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| anyhow::anyhow!("system randomness unavailable: {e}"))?;
    Ok((password.clone(), verifier(&password, &salt)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No hash made by a SQL Server was at hand offline: this vector is the documented T-SQL
    /// construction (`0x0200 + @salt + HASHBYTES('SHA2_512', CAST(N'secret' AS varbinary) +
    /// @salt)`) computed independently with Python's hashlib. The MSSQL integration test checks
    /// real hashes with `PWDCOMPARE`.
    #[test]
    fn mssql_hash_matches_the_documented_construction() {
        assert_eq!(
            mssql_hash("secret", &[1, 2, 3, 4]),
            "0x020001020304EFE8DF30D6F1BAC62F0DC1D5D118928FB3BD18FFEAA614F7EEC41FEC4D9058B06A8A44642527DA0A63DDB7F8E92567DCA8A3808C2EC1D258F12D5DBDE8DE30CA"
        );
        let (password, hash) = new_password_for(crate::state::tenant::DbType::Mssql).expect("random");
        assert_eq!(hash.len(), 6 + 8 + 128);
        assert_eq!(mssql_hash(&password, &hex::decode(&hash[6..14]).expect("hex").try_into().expect("4 bytes")), hash);
    }

    /// The vector from the postgres-protocol crate's own tests (password "secret", salt 1..=16).
    #[test]
    fn matches_the_postgres_protocol_vector() {
        let salt: [u8; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
        assert_eq!(
            verifier("secret", &salt),
            "SCRAM-SHA-256$4096:AQIDBAUGBwgJCgsMDQ4PEA==$8rrDg00OqaiWXJ7p+sCgHEIaBSHY89ZJl3mfIsf32oY=:05L1f+yZbiN8O0AnO40Og85NNRhvzTS57naKRWCcsIA="
        );
    }

    fn berqenas_shape(v: &str) -> bool {
        let Some(rest) = v.strip_prefix("SCRAM-SHA-256$4096:") else { return false };
        let parts: Vec<&str> = rest.split(['$', ':']).collect();
        parts.len() == 3 && parts.iter().all(|p| STANDARD.decode(p).is_ok())
    }

    #[test]
    fn new_passwords_are_random_and_verifiable_shapes() {
        let (a, va) = new_password().expect("password");
        let (b, _) = new_password().expect("password");
        assert_ne!(a, b);
        assert_eq!(a.len(), 24);
        // The node agent checks this exact shape before the verifier reaches SQL.
        assert!(berqenas_shape(&va), "{va}");
        assert!(!va.contains(&a));
    }
}
