//! TOTP (RFC 6238): HMAC-SHA-1, 6 digits, 30 s steps, one step either side accepted. Pure:
//! the time comes in, the matched step goes out, and the caller (the state machine, at apply)
//! refuses a step that is not newer than the user's last accepted one.

use ring::hmac;
use subtle::ConstantTimeEq;

/// Seconds per step.
pub const STEP_S: u64 = 30;
/// Bytes of a new secret (160 bits, RFC 4226's recommendation).
pub const SECRET_LEN: usize = 20;

/// The step `now_ms` falls in.
pub fn step_at(now_ms: u64) -> u64 {
    now_ms / 1000 / STEP_S
}

/// The 6-digit code of `secret` at `step`.
pub fn code(secret: &[u8], step: u64) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let mac = hmac::sign(&key, &step.to_be_bytes());
    let mac = mac.as_ref();
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    let bin = u32::from_be_bytes([mac[offset] & 0x7f, mac[offset + 1], mac[offset + 2], mac[offset + 3]]);
    format!("{:06}", bin % 1_000_000)
}

/// The step whose code `presented` is, among the steps around `now_ms` (−1, 0, +1), if any.
pub fn verify(secret: &[u8], presented: &str, now_ms: u64) -> Option<u64> {
    let presented = presented.trim();
    if presented.len() != 6 || !presented.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = step_at(now_ms);
    let mut found = None;
    // Every candidate is compared (in constant time), whichever matches.
    for step in [now.saturating_sub(1), now, now + 1] {
        if bool::from(code(secret, step).as_bytes().ct_eq(presented.as_bytes())) && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// RFC 4648 base32 without padding (what authenticator apps take).
pub fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Decodes `base32` (upper or lower case, no padding), for tests and tools.
pub fn from_base32(text: &str) -> Option<Vec<u8>> {
    let (mut buffer, mut bits, mut out) = (0u32, 0u32, Vec::new());
    for c in text.trim_end_matches('=').chars() {
        let v = match c.to_ascii_uppercase() {
            c @ 'A'..='Z' => c as u32 - 'A' as u32,
            c @ '2'..='7' => c as u32 - '2' as u32 + 26,
            _ => return None,
        };
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((buffer >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

/// The `otpauth://` URI an authenticator app imports (label and issuer percent-encoded).
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits=6&period={STEP_S}",
        enc(issuer),
        enc(account),
        base32(secret),
        enc(issuer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vectors() {
        let secret = b"12345678901234567890";
        // RFC 6238 appendix B (8 digits there; the last 6 here).
        for (t, expected) in
            [(59u64, "287082"), (1_111_111_109, "081804"), (1_234_567_890, "005924"), (2_000_000_000, "279037")]
        {
            assert_eq!(code(secret, t / STEP_S), expected, "t = {t}");
        }
    }

    #[test]
    fn a_code_is_accepted_one_step_either_side_and_no_further() {
        let secret = [7u8; SECRET_LEN];
        let now_ms = 1_700_000_000_000;
        let now = step_at(now_ms);
        assert_eq!(verify(&secret, &code(&secret, now), now_ms), Some(now));
        assert_eq!(verify(&secret, &code(&secret, now - 1), now_ms), Some(now - 1));
        assert_eq!(verify(&secret, &code(&secret, now + 1), now_ms), Some(now + 1));
        assert_eq!(verify(&secret, &code(&secret, now - 2), now_ms), None);
        assert_eq!(verify(&secret, "12345", now_ms), None);
        assert_eq!(verify(&secret, "abcdef", now_ms), None);
    }

    #[test]
    fn base32_round_trips() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        for len in 0..25 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(from_base32(&base32(&bytes)), Some(bytes));
        }
        assert!(
            otpauth_uri("Berqenas", "alice", b"foobar").starts_with("otpauth://totp/Berqenas:alice?secret=MZXW6YTBOI&")
        );
    }
}
