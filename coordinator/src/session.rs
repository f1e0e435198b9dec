//! Panel sessions: signed tokens any coordinator verifies without a Raft write, and the sealing of
//! users' TOTP secrets. Both keys are derived from the cluster key (`backupkey.rs`) with their own
//! HKDF labels. A token is `base64url(claims JSON) "." base64url(HMAC-SHA256)`; its claims name
//! the user, the user's generation (a disable or reset ends it), its expiry, a random nonce (the
//! CSRF token is an HMAC of it, so it is bound to this session) and its stage (signed in, or only
//! allowed to finish TOTP enrolment, carrying the proposed secret sealed).

use crate::backupkey::ClusterKey;
use crate::state::user::{SealedSecret, UserName};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::hmac;
use serde::{Deserialize, Serialize};

/// The cookie's name.
pub const COOKIE: &str = "berqenas_session";
/// The header a cookie request that changes something must carry.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long an enrolment-only session lasts.
pub const ENROL_MS: u64 = 10 * 60 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    SignedIn,
    /// Password checked; only `POST /api/v1/session/totp` with a code of `enrol` is allowed.
    EnrolTotp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub user: UserName,
    pub generation: u64,
    pub expires_ms: u64,
    pub nonce: String,
    pub stage: Stage,
    /// The proposed secret of an enrolment session (sealed like a stored one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrol: Option<SealedSecret>,
}

/// The session and TOTP keys of this cluster.
pub struct SessionKeys {
    sign: hmac::Key,
    seal: LessSafeKey,
    cluster_key_id: String,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys").field("cluster_key_id", &self.cluster_key_id).finish_non_exhaustive()
    }
}

fn random<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).map_err(|e| anyhow::anyhow!("system randomness unavailable: {e}"))?;
    Ok(b)
}

fn aad(user: &UserName) -> Vec<u8> {
    let mut a = b"berqenas totp secret v1\0".to_vec();
    a.extend_from_slice(user.as_str().as_bytes());
    a
}

impl SessionKeys {
    pub fn new(cluster: &ClusterKey) -> anyhow::Result<Self> {
        let seal = UnboundKey::new(&AES_256_GCM, &cluster.derive(b"berqenas totp secrets v1"))
            .map_err(|_| anyhow::anyhow!("the derived TOTP key is not an AES-256 key"))?;
        Ok(Self {
            sign: hmac::Key::new(hmac::HMAC_SHA256, &cluster.derive(b"berqenas session tokens v1")),
            seal: LessSafeKey::new(seal),
            cluster_key_id: cluster.id.clone(),
        })
    }

    /// New claims for `user` at `generation`, lasting `ttl_ms` from `now_ms`.
    pub fn claims(
        user: &UserName,
        generation: u64,
        now_ms: u64,
        ttl_ms: u64,
        stage: Stage,
        enrol: Option<SealedSecret>,
    ) -> anyhow::Result<Claims> {
        Ok(Claims {
            user: user.clone(),
            generation,
            expires_ms: now_ms.saturating_add(ttl_ms),
            nonce: hex::encode(random::<16>()?),
            stage,
            enrol,
        })
    }

    pub fn sign(&self, claims: &Claims) -> anyhow::Result<String> {
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?);
        let tag = hmac::sign(&self.sign, body.as_bytes());
        Ok(format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref())))
    }

    /// The claims of a token this cluster signed that has not expired at `now_ms`.
    pub fn verify(&self, token: &str, now_ms: u64) -> Option<Claims> {
        let (body, tag) = token.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        hmac::verify(&self.sign, body.as_bytes(), &tag).ok()?;
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
        (now_ms < claims.expires_ms).then_some(claims)
    }

    /// The CSRF token of a session: an HMAC of its nonce, so it is bound to that session.
    pub fn csrf(&self, claims: &Claims) -> String {
        let tag = hmac::sign(&self.sign, format!("csrf\0{}", claims.nonce).as_bytes());
        URL_SAFE_NO_PAD.encode(&tag.as_ref()[..24])
    }

    /// Whether `presented` is the CSRF token of `claims` (constant time).
    pub fn csrf_matches(&self, claims: &Claims, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.csrf(claims).as_bytes().ct_eq(presented.as_bytes()).into()
    }

    /// A new TOTP secret and its sealed form for `user`.
    pub fn new_totp_secret(&self, user: &UserName) -> anyhow::Result<([u8; crate::totp::SECRET_LEN], SealedSecret)> {
        let secret = random::<{ crate::totp::SECRET_LEN }>()?;
        let nonce = random::<12>()?;
        let mut sealed = secret.to_vec();
        self.seal
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad(user)), &mut sealed)
            .map_err(|_| anyhow::anyhow!("sealing a TOTP secret failed"))?;
        let sealed = SealedSecret {
            cluster_key_id: self.cluster_key_id.clone(),
            nonce: hex::encode(nonce),
            sealed: hex::encode(sealed),
        };
        Ok((secret, sealed))
    }

    /// Opens a sealed TOTP secret of `user`; `None` for another user's, key's or changed bytes.
    pub fn open_totp_secret(&self, user: &UserName, s: &SealedSecret) -> Option<Vec<u8>> {
        if s.cluster_key_id != self.cluster_key_id {
            return None;
        }
        let nonce: [u8; 12] = hex::decode(&s.nonce).ok()?.try_into().ok()?;
        let mut sealed = hex::decode(&s.sealed).ok()?;
        let plain =
            self.seal.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad(user)), &mut sealed).ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> UserName {
        UserName::parse(n).expect("valid")
    }

    #[test]
    fn a_token_verifies_only_unchanged_unexpired_and_under_its_key() {
        let keys = SessionKeys::new(&ClusterKey::from_bytes([3; 32])).expect("keys");
        let claims = SessionKeys::claims(&name("alice"), 2, 1_000, 500, Stage::SignedIn, None).expect("claims");
        let token = keys.sign(&claims).expect("sign");
        assert_eq!(keys.verify(&token, 1_499), Some(claims.clone()));
        assert_eq!(keys.verify(&token, 1_500), None, "expired");
        let (body, tag) = token.split_once('.').expect("two parts");
        let mut forged = claims.clone();
        forged.generation = 3;
        let forged_body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).expect("json"));
        assert_eq!(keys.verify(&format!("{forged_body}.{tag}"), 1_200), None, "changed claims");
        assert_eq!(keys.verify(body, 1_200), None);
        let other = SessionKeys::new(&ClusterKey::from_bytes([4; 32])).expect("keys");
        assert_eq!(other.verify(&token, 1_200), None, "another cluster's key");
        let csrf = keys.csrf(&claims);
        assert!(keys.csrf_matches(&claims, &csrf));
        let next = SessionKeys::claims(&name("alice"), 2, 1_000, 500, Stage::SignedIn, None).expect("claims");
        assert!(!keys.csrf_matches(&next, &csrf), "bound to its session");
    }

    #[test]
    fn a_sealed_secret_opens_only_for_its_user() {
        let keys = SessionKeys::new(&ClusterKey::from_bytes([3; 32])).expect("keys");
        let (secret, sealed) = keys.new_totp_secret(&name("alice")).expect("secret");
        assert!(!sealed.sealed.contains(&hex::encode(secret)));
        assert_eq!(keys.open_totp_secret(&name("alice"), &sealed), Some(secret.to_vec()));
        assert_eq!(keys.open_totp_secret(&name("bob"), &sealed), None);
    }
}
