//! Panel users: platform admins and tenant users (owner, admin, member). Stored: the Argon2id
//! hash of the password (made at the edge, never here), the TOTP secret sealed under a key derived
//! from the cluster key (opened only at the edge), a generation that every disable and reset bumps
//! (a session names the generation it was made at, so older sessions die), and the sign-in
//! counters: failures in a row, locked-until, the last accepted TOTP step. Every coordinator
//! agrees on lockouts and on replayed codes because they are decided here, at apply.

use super::action::{details, Action, Target};
use super::names::TenantName;
use super::{Cx, DomainError, Handled, Op, Reply, Response, State, Touched};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Failed sign-ins in a row that lock a user.
pub const MAX_FAILURES: u32 = 5;
/// How long a lockout lasts.
pub const LOCK_MS: u64 = 15 * 60 * 1000;

/// A user's role. Owner, admin and member belong to exactly one tenant; a platform admin to none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserRole {
    /// Reads its tenant.
    Member,
    /// Also devices, device tokens, exposures and firewall rules of its tenant.
    Admin,
    /// Also its tenant's users, backups and invoices.
    Owner,
    /// Everything, like an admin API key.
    PlatformAdmin,
}

impl UserRole {
    pub fn as_str(self) -> &'static str {
        match self {
            UserRole::Member => "member",
            UserRole::Admin => "admin",
            UserRole::Owner => "owner",
            UserRole::PlatformAdmin => "platform_admin",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    Active,
    Disabled,
}

/// Why a user name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "user name must be 2 to 63 characters: a lowercase letter a-z, then lowercase letters, digits, '_', '-' or '.'"
)]
pub struct InvalidUserName;

/// A user name: `^[a-z][a-z0-9_.-]{1,62}$`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserName(String);

impl UserName {
    pub fn parse(raw: &str) -> Result<Self, InvalidUserName> {
        let mut chars = raw.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'));
        if first_ok && rest_ok && (2..=63).contains(&raw.len()) {
            Ok(Self(raw.to_string()))
        } else {
            Err(InvalidUserName)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UserName {
    type Error = InvalidUserName;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<UserName> for String {
    fn from(value: UserName) -> Self {
        value.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A TOTP secret sealed (AES-256-GCM, AAD = user name) under a key derived from the cluster key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret {
    pub cluster_key_id: String,
    pub nonce: String,
    pub sealed: String,
}

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedSecret").field("cluster_key_id", &self.cluster_key_id).finish_non_exhaustive()
    }
}

/// The stored user.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: UserName,
    pub role: UserRole,
    pub tenant: Option<TenantName>,
    pub status: UserStatus,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Enrolled TOTP secret, sealed.
    pub totp: Option<SealedSecret>,
    /// Bumped by disable, enable, password and MFA resets: sessions of an older one are refused.
    pub generation: u64,
    /// Failed sign-ins since the last success or lockout.
    pub failures: u32,
    pub locked_until_ms: Option<u64>,
    /// The last TOTP time step accepted: a code is never accepted twice.
    pub last_totp_step: Option<u64>,
    pub created_at_ms: u64,
    pub last_sign_in_ms: Option<u64>,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("tenant", &self.tenant)
            .field("status", &self.status)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl User {
    pub fn is_locked(&self, now_ms: u64) -> bool {
        self.locked_until_ms.is_some_and(|t| now_ms < t)
    }

    /// A copy for replies: no hash, no secret.
    pub fn redacted(&self) -> Self {
        Self { password_hash: String::new(), totp: None, ..self.clone() }
    }

    /// The actor name of this user's commands in the audit trail.
    pub fn actor(name: &UserName) -> String {
        format!("user/{name}")
    }
}

/// Why a sign-in failed (audit detail; never the password or code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignInFailure {
    WrongPassword,
    WrongTotp,
    ReplayedTotp,
    Disabled,
}

impl SignInFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            SignInFailure::WrongPassword => "wrong password",
            SignInFailure::WrongTotp => "wrong TOTP code",
            SignInFailure::ReplayedTotp => "TOTP code already used",
            SignInFailure::Disabled => "user is disabled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserOp {
    Create(Box<User>),
    SetActive {
        name: UserName,
        active: bool,
    },
    ResetMfa {
        name: UserName,
    },
    ResetPassword {
        name: UserName,
        password_hash: String,
    },
    /// First sign-in of a user without TOTP: the confirmed secret, and the sign-in itself.
    EnrolTotp {
        name: UserName,
        generation: u64,
        secret: SealedSecret,
        step: u64,
    },
    /// Password (and code, if enrolled) checked at the edge; the lockout, generation and the code's
    /// freshness are checked here.
    SignIn {
        name: UserName,
        generation: u64,
        totp_step: Option<u64>,
    },
    SignInFailed {
        name: UserName,
        reason: SignInFailure,
    },
    /// Ends every session of the user (bumps its generation).
    SignOut {
        name: UserName,
    },
    /// A signed-in user's own new password (the current one checked at the edge, the new one
    /// hashed there): only the user itself may give it (`recheck`), or an admin key; every
    /// session made before it ends (the caller gets a new one).
    ChangePassword {
        name: UserName,
        password_hash: String,
    },
}

impl UserOp {
    pub fn name(&self) -> &UserName {
        match self {
            UserOp::Create(u) => &u.name,
            UserOp::SetActive { name, .. }
            | UserOp::ResetMfa { name }
            | UserOp::ResetPassword { name, .. }
            | UserOp::EnrolTotp { name, .. }
            | UserOp::SignIn { name, .. }
            | UserOp::SignInFailed { name, .. }
            | UserOp::SignOut { name }
            | UserOp::ChangePassword { name, .. } => name,
        }
    }

    pub fn describe(&self) -> (Action, Target) {
        let action = match self {
            UserOp::Create(_) => Action::UserCreate,
            UserOp::SetActive { active: true, .. } => Action::UserEnable,
            UserOp::SetActive { active: false, .. } => Action::UserDisable,
            UserOp::ResetMfa { .. } => Action::UserResetMfa,
            UserOp::ResetPassword { .. } => Action::UserResetPassword,
            UserOp::EnrolTotp { .. } => Action::UserTotpEnrol,
            UserOp::SignIn { .. } => Action::UserSignIn,
            UserOp::SignInFailed { .. } => Action::UserSignInFailed,
            UserOp::SignOut { .. } => Action::UserSignOut,
            UserOp::ChangePassword { .. } => Action::UserChangePassword,
        };
        (action, Target::User(self.name().to_string()))
    }

    /// Whether an admin (key or platform admin) or a tenant owner must ask for this (a password
    /// change also by the user itself: `recheck`).
    pub fn is_management(&self) -> bool {
        matches!(
            self,
            UserOp::Create(_)
                | UserOp::SetActive { .. }
                | UserOp::ResetMfa { .. }
                | UserOp::ResetPassword { .. }
                | UserOp::ChangePassword { .. }
        )
    }
}

/// Why a session user's command was refused at apply; the message is the audit reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum UserRefused {
    #[error("user {0} does not exist")]
    Missing(String),
    #[error("user {0} is disabled or its session is older than its last reset")]
    Stale(String),
    #[error("a {} user may not do this", .0.as_str())]
    Role(UserRole),
    #[error("a user of tenant {0} may not act on another tenant or the cluster")]
    OtherTenant(String),
    #[error("a user changes only its own password")]
    OtherUser,
}

/// What a tenant user needs to give `op`: its tenant and the least role. `None`: platform only.
pub fn tenant_need(op: &Op) -> Option<(&TenantName, UserRole)> {
    match op {
        Op::Backup(b) => b.customer_tenant().map(|t| (t, UserRole::Owner)),
        Op::User(UserOp::Create(u)) => u.tenant.as_ref().map(|t| (t, UserRole::Owner)),
        other => other.customer_tenant().map(|t| (t, UserRole::Admin)),
    }
}

/// The check at apply of a command a session user gives: the user exists, is active, its
/// generation is the session's, and its role allows the command.
pub fn recheck(user: Option<&User>, actor: &str, generation: u64, op: &Op) -> Result<(), UserRefused> {
    let user = user.ok_or_else(|| UserRefused::Missing(actor.to_string()))?;
    if user.status != UserStatus::Active || user.generation != generation {
        return Err(UserRefused::Stale(actor.to_string()));
    }
    // Self-service, whatever the role: a user's own password, never another's.
    if let Op::User(UserOp::ChangePassword { name, .. }) = op {
        return if *name == user.name { Ok(()) } else { Err(UserRefused::OtherUser) };
    }
    if user.role == UserRole::PlatformAdmin {
        return Ok(());
    }
    match (tenant_need(op), &user.tenant) {
        (Some((t, least)), Some(own)) if t == own => {
            if user.role >= least {
                Ok(())
            } else {
                Err(UserRefused::Role(user.role))
            }
        }
        _ => Err(UserRefused::OtherTenant(user.tenant.as_ref().map(ToString::to_string).unwrap_or_default())),
    }
}

fn not_found(name: &UserName) -> DomainError {
    DomainError::NotFound(format!("user {name} not found"))
}

impl State {
    pub(super) fn user_command(&mut self, cx: Cx<'_>, op: &UserOp) -> Handled {
        let now = cx.at.now;
        match op {
            UserOp::Create(user) => {
                let mut d = details(&[("role", user.role.as_str().to_string())]);
                if let Some(t) = &user.tenant {
                    d.insert("tenant".into(), t.to_string());
                }
                (self.create_user(user, cx.touched), cx.facts.with(d))
            }
            UserOp::SetActive { name, active } => {
                let status = if *active { UserStatus::Active } else { UserStatus::Disabled };
                (self.change_user(name, cx.touched, |u| u.status = status), cx.facts)
            }
            UserOp::ResetMfa { name } => (
                self.change_user(name, cx.touched, |u| {
                    u.totp = None;
                    u.last_totp_step = None;
                }),
                cx.facts,
            ),
            UserOp::ResetPassword { name, password_hash } => (
                self.change_user(name, cx.touched, |u| {
                    u.password_hash = password_hash.clone();
                    u.failures = 0;
                    u.locked_until_ms = None;
                }),
                cx.facts,
            ),
            // The generation bump ends every session made before; the lockout state is the
            // user's own and stays as it is.
            UserOp::ChangePassword { name, password_hash } => {
                if password_hash.is_empty() {
                    return (Err(DomainError::Invalid("a password change needs a password hash".into())), cx.facts);
                }
                (self.change_user(name, cx.touched, |u| u.password_hash = password_hash.clone()), cx.facts)
            }
            UserOp::EnrolTotp { name, generation, secret, step } => {
                let r = self.sign_in(now, name, *generation, Some(*step), Some(secret), cx.touched);
                (r, cx.facts)
            }
            UserOp::SignIn { name, generation, totp_step } => {
                let d = details(&[("mfa", if totp_step.is_some() { "totp" } else { "none" }.to_string())]);
                (self.sign_in(now, name, *generation, *totp_step, None, cx.touched), cx.facts.with(d))
            }
            UserOp::SignInFailed { name, reason } => {
                let Some(user) = self.users.get_mut(name.as_str()) else { return (Err(not_found(name)), cx.facts) };
                user.failures += 1;
                let mut d =
                    details(&[("reason", reason.as_str().to_string()), ("failures", user.failures.to_string())]);
                if user.failures >= MAX_FAILURES {
                    user.failures = 0;
                    user.locked_until_ms = Some(now.saturating_add(LOCK_MS));
                    d.insert("locked_for_s".into(), (LOCK_MS / 1000).to_string());
                }
                cx.touched.push(Touched::User(name.to_string()));
                (Ok(Reply::User(Box::new(user.redacted()))), cx.facts.with(d))
            }
            // Tokens are not stored, so signing out ends every session of the user.
            UserOp::SignOut { name } => (self.change_user(name, cx.touched, |_| {}), cx.facts),
        }
    }

    fn create_user(&mut self, user: &User, touched: &mut Vec<Touched>) -> Response {
        if self.users.contains_key(user.name.as_str()) {
            return Err(DomainError::Conflict(format!("user {} already exists", user.name)));
        }
        match (user.role, &user.tenant) {
            (UserRole::PlatformAdmin, Some(_)) => {
                return Err(DomainError::Invalid("a platform admin belongs to no tenant".into()));
            }
            (UserRole::PlatformAdmin, None) => {}
            (_, None) => return Err(DomainError::Invalid("an owner, admin or member must name its tenant".into())),
            (_, Some(t)) if !self.tenants.contains_key(t) => return Err(super::tenant::not_found(t)),
            (_, Some(_)) => {}
        }
        if user.status != UserStatus::Active || user.totp.is_some() || user.password_hash.is_empty() {
            return Err(DomainError::Invalid("a new user is active, has a password and no TOTP yet".into()));
        }
        self.users.insert(user.name.to_string(), user.clone());
        touched.push(Touched::User(user.name.to_string()));
        Ok(Reply::User(Box::new(user.redacted())))
    }

    /// Applies `change` and bumps the generation (every management change ends old sessions).
    fn change_user(&mut self, name: &UserName, touched: &mut Vec<Touched>, change: impl FnOnce(&mut User)) -> Response {
        let user = self.users.get_mut(name.as_str()).ok_or_else(|| not_found(name))?;
        change(user);
        user.generation += 1;
        touched.push(Touched::User(name.to_string()));
        Ok(Reply::User(Box::new(user.redacted())))
    }

    fn sign_in(
        &mut self,
        now: u64,
        name: &UserName,
        generation: u64,
        step: Option<u64>,
        enrol: Option<&SealedSecret>,
        touched: &mut Vec<Touched>,
    ) -> Response {
        let user = self.users.get_mut(name.as_str()).ok_or_else(|| not_found(name))?;
        if user.status != UserStatus::Active || user.generation != generation {
            return Err(DomainError::Conflict(format!("user {name} changed since the password was checked")));
        }
        if user.is_locked(now) {
            return Err(DomainError::Exhausted(format!("user {name} is locked after too many failed sign-ins")));
        }
        if let (Some(step), Some(last)) = (step, user.last_totp_step) {
            if step <= last {
                return Err(DomainError::Conflict("TOTP code already used".into()));
            }
        }
        match (enrol, &user.totp) {
            (Some(_), Some(_)) => return Err(DomainError::Conflict(format!("user {name} already has TOTP"))),
            (Some(secret), None) => user.totp = Some(secret.clone()),
            (None, _) => {}
        }
        if step.is_some() {
            user.last_totp_step = step;
        }
        user.failures = 0;
        user.locked_until_ms = None;
        user.last_sign_in_ms = Some(now);
        touched.push(Touched::User(name.to_string()));
        Ok(Reply::User(Box::new(user.redacted())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_validated() {
        assert!(UserName::parse("alice").is_ok());
        assert!(UserName::parse("ops.alice-2").is_ok());
        for bad in ["", "a", "Alice", "1alice", "al ice", "al'ice", &"a".repeat(64)] {
            assert!(UserName::parse(bad).is_err(), "{bad:?}");
        }
    }

    use crate::state::tests_support::{booted, create, next_index};
    use crate::state::{Command, Meta};

    fn user(name: &str, role: UserRole, tenant: Option<&str>) -> User {
        User {
            name: UserName::parse(name).expect("valid"),
            role,
            tenant: tenant.map(|t| TenantName::parse(t).expect("valid")),
            status: UserStatus::Active,
            password_hash: "$argon2id$v=19$x".into(),
            totp: None,
            generation: 0,
            failures: 0,
            locked_until_ms: None,
            last_totp_step: None,
            created_at_ms: 0,
            last_sign_in_ms: None,
        }
    }

    fn apply(s: &mut State, time_ms: u64, actor: &str, generation: Option<u64>, op: Op) -> Response {
        let i = next_index(s);
        let meta =
            Meta { time_ms, actor: actor.into(), source: "t".into(), key_role: None, user_generation: generation };
        s.apply(i, &Command { meta, op }).0
    }

    fn name(n: &str) -> UserName {
        UserName::parse(n).expect("valid")
    }

    #[test]
    fn five_failures_lock_and_the_lock_refuses_a_sign_in_until_it_ends() {
        let mut s = booted();
        assert!(apply(
            &mut s,
            1,
            "t",
            None,
            Op::User(UserOp::Create(Box::new(user("mia", UserRole::PlatformAdmin, None))))
        )
        .is_ok());
        for _ in 0..MAX_FAILURES {
            let op = UserOp::SignInFailed { name: name("mia"), reason: SignInFailure::WrongPassword };
            assert!(apply(&mut s, 1_000, "user/mia", None, Op::User(op)).is_ok());
        }
        assert_eq!(s.users["mia"].locked_until_ms, Some(1_000 + LOCK_MS));
        let sign_in = || Op::User(UserOp::SignIn { name: name("mia"), generation: 0, totp_step: None });
        assert!(matches!(apply(&mut s, 2_000, "user/mia", None, sign_in()), Err(DomainError::Exhausted(_))));
        assert!(apply(&mut s, 1_000 + LOCK_MS, "user/mia", None, sign_in()).is_ok(), "the lock ends");
    }

    #[test]
    fn a_totp_step_is_accepted_once_and_a_reset_ends_old_sessions() {
        let mut s = booted();
        apply(&mut s, 1, "t", None, Op::User(UserOp::Create(Box::new(user("mia", UserRole::PlatformAdmin, None)))))
            .expect("created");
        let sign_in = |step| Op::User(UserOp::SignIn { name: name("mia"), generation: 0, totp_step: Some(step) });
        assert!(apply(&mut s, 2, "user/mia", None, sign_in(100)).is_ok());
        assert!(apply(&mut s, 3, "user/mia", None, sign_in(100)).is_err(), "replayed step");
        assert!(apply(&mut s, 3, "user/mia", None, sign_in(99)).is_err(), "older step");
        assert!(apply(&mut s, 4, "user/mia", None, sign_in(101)).is_ok());
        apply(&mut s, 5, "t", None, Op::User(UserOp::ResetMfa { name: name("mia") })).expect("reset");
        assert!(apply(&mut s, 6, "user/mia", None, sign_in(102)).is_err(), "generation 0 is over");
    }

    #[test]
    fn a_session_user_is_rechecked_at_apply_by_role_tenant_and_generation() {
        let mut s = booted();
        create(&mut s, "acme");
        create(&mut s, "globex");
        for (n, role) in [("max", UserRole::Member), ("ada", UserRole::Admin), ("olga", UserRole::Owner)] {
            apply(&mut s, 1, "t", None, Op::User(UserOp::Create(Box::new(user(n, role, Some("acme"))))))
                .expect("created");
        }
        let block = |t: &str| Op::BlockDomain {
            tenant: TenantName::parse(t).expect("valid"),
            domain: "example.com".parse().expect("valid"),
            blocked: true,
        };
        let refused = |r: Response| matches!(r, Err(DomainError::UserForbidden(_)));
        assert!(refused(apply(&mut s, 2, "user/max", Some(0), block("acme"))), "member");
        assert!(refused(apply(&mut s, 2, "user/ada", Some(0), block("globex"))), "another tenant");
        assert!(refused(apply(&mut s, 2, "user/ada", Some(1), block("acme"))), "another generation");
        assert!(apply(&mut s, 2, "user/ada", Some(0), block("acme")).is_ok());
        let tenant_user = Op::User(UserOp::Create(Box::new(user("nina", UserRole::Member, Some("acme")))));
        assert!(refused(apply(&mut s, 3, "user/ada", Some(0), tenant_user.clone())), "users are the owner's");
        assert!(apply(&mut s, 3, "user/olga", Some(0), tenant_user).is_ok());
        let platform = Op::User(UserOp::Create(Box::new(user("root", UserRole::PlatformAdmin, None))));
        assert!(refused(apply(&mut s, 4, "user/olga", Some(0), platform)), "an owner makes no platform admin");
    }

    #[test]
    fn a_user_changes_only_its_own_password_and_its_sessions_end() {
        let mut s = booted();
        create(&mut s, "acme");
        for n in ["max", "nina"] {
            apply(&mut s, 1, "t", None, Op::User(UserOp::Create(Box::new(user(n, UserRole::Member, Some("acme"))))))
                .expect("created");
        }
        let change = |n: &str| Op::User(UserOp::ChangePassword { name: name(n), password_hash: "$h".into() });
        let refused = |r: Response| matches!(r, Err(DomainError::UserForbidden(UserRefused::OtherUser)));
        assert!(refused(apply(&mut s, 2, "user/max", Some(0), change("nina"))), "not another's, even in its tenant");
        assert!(apply(&mut s, 2, "user/max", Some(0), change("max")).is_ok(), "a member changes its own");
        assert_eq!((s.users["max"].password_hash.as_str(), s.users["max"].generation), ("$h", 1));
        assert!(apply(&mut s, 3, "user/max", Some(0), change("max")).is_err(), "the old session ended");
    }

    #[test]
    fn debug_shows_no_hash_or_secret() {
        let u = User {
            name: UserName::parse("alice").expect("valid"),
            role: UserRole::PlatformAdmin,
            tenant: None,
            status: UserStatus::Active,
            password_hash: "$argon2id$v=19$secret".into(),
            totp: Some(SealedSecret { cluster_key_id: "k".into(), nonce: "n".into(), sealed: "sealedbytes".into() }),
            generation: 0,
            failures: 0,
            locked_until_ms: None,
            last_totp_step: None,
            created_at_ms: 0,
            last_sign_in_ms: None,
        };
        let shown = format!("{u:?}");
        assert!(!shown.contains("argon2id") && !shown.contains("sealedbytes"), "{shown}");
        assert!(u.redacted().password_hash.is_empty() && u.redacted().totp.is_none());
    }
}
