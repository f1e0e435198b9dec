//! The device's WireGuard key pair (x25519), made here from the OS's random source. Only the
//! public half is ever sent; the private half has no `Debug` and is written only to `wg.key`
//! and, on request, into an exported configuration.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use x25519_dalek::{PublicKey, StaticSecret};

pub struct WgPrivateKey(StaticSecret);

impl WgPrivateKey {
    /// A new random key, clamped as `wg genkey` clamps it.
    pub fn generate() -> anyhow::Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes).map_err(|e| anyhow::anyhow!("no random source: {e}"))?;
        bytes[0] &= 248;
        bytes[31] &= 127;
        bytes[31] |= 64;
        Ok(Self(StaticSecret::from(bytes)))
    }

    pub fn from_base64(s: &str) -> Option<Self> {
        let bytes: [u8; 32] = STANDARD.decode(s).ok()?.try_into().ok()?;
        Some(Self(StaticSecret::from(bytes)))
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.to_bytes())
    }

    #[cfg_attr(not(target_os = "linux"), allow(dead_code, reason = "the Linux tunnel driver's"))]
    pub fn bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn public_base64(&self) -> String {
        STANDARD.encode(PublicKey::from(&self.0).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_matches_the_rfc7748_vector() {
        // RFC 7748 §6.1, Alice's key pair.
        let private = hex::decode("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a").unwrap();
        let key = WgPrivateKey::from_base64(&STANDARD.encode(private)).unwrap();
        let public = hex::decode("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a").unwrap();
        assert_eq!(key.public_base64(), STANDARD.encode(public));
    }

    #[test]
    fn generated_keys_round_trip_and_differ() {
        let a = WgPrivateKey::generate().unwrap();
        let b = WgPrivateKey::generate().unwrap();
        assert_ne!(a.to_base64(), b.to_base64());
        let again = WgPrivateKey::from_base64(&a.to_base64()).unwrap();
        assert_eq!(again.public_base64(), a.public_base64());
        assert_eq!(a.bytes()[0] & 7, 0, "clamped");
    }
}
