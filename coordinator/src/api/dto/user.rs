//! Users and sessions on the wire: the sign-in body and its two answers (signed in, or TOTP
//! enrolment first), users as shown (never a hash or secret) and the one answer that carries a
//! new password.

use super::wire_enum;
use crate::state::user::{User, UserRole, UserStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

wire_enum!(
    UserRole,
    "`platform_admin`: everything; `owner`: its tenant with users, backups and invoices; `admin`: its tenant's \
     devices, device tokens, exposures and firewall; `member`: reads its tenant.",
    [UserRole::PlatformAdmin, UserRole::Owner, UserRole::Admin, UserRole::Member]
);
wire_enum!(
    UserStatus,
    "`disabled` users cannot sign in; their sessions end.",
    [UserStatus::Active, UserStatus::Disabled]
);

#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInBody {
    #[schema(max_length = 63)]
    pub username: String,
    #[schema(max_length = 256)]
    pub password: String,
    /// The 6-digit code of the user's authenticator, once it has TOTP.
    #[serde(default)]
    #[schema(pattern = "^[0-9]{6}$")]
    pub totp: Option<String>,
}

impl std::fmt::Debug for SignInBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInBody").field("username", &self.username).finish_non_exhaustive()
    }
}

#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpBody {
    #[schema(pattern = "^[0-9]{6}$")]
    pub code: String,
}

/// A signed-in user's own new password; the current one proves it is the user at the keyboard.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordBody {
    #[schema(max_length = 256)]
    pub current_password: String,
    /// 12 to 256 characters, at least 5 different ones, no control characters, no leading or
    /// trailing space, not containing the user name.
    #[schema(min_length = 12, max_length = 256)]
    pub new_password: String,
}

impl std::fmt::Debug for ChangePasswordBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangePasswordBody").finish_non_exhaustive()
    }
}

/// Who is signed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionUserView {
    pub name: String,
    pub role: UserRole,
    pub tenant: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignedInStage {
    SignedIn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EnrolStage {
    EnrolTotp,
}

/// A signed-in session: send `csrf_token` as `X-CSRF-Token` with every change.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    pub stage: SignedInStage,
    pub user: SessionUserView,
    pub csrf_token: String,
    /// RFC 3339, UTC.
    pub expires_at: String,
}

/// First sign-in of a platform admin: enrol this secret, then `POST /api/v1/session/totp`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnrolView {
    pub stage: EnrolStage,
    /// Base32, for typing into an authenticator.
    pub totp_secret: String,
    pub otpauth_uri: String,
    /// `otpauth_uri` as an SVG QR code, for an authenticator app to scan.
    pub otpauth_qr_svg: String,
}

/// The answer to a sign-in: signed in, or TOTP enrolment first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum SignInAnswer {
    SignedIn(SessionView),
    EnrolTotp(EnrolView),
}

/// A user as shown: never its password hash or TOTP secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    pub name: String,
    pub role: UserRole,
    pub tenant: Option<String>,
    pub status: UserStatus,
    pub totp_enrolled: bool,
    pub created_at_ms: u64,
    pub last_sign_in_ms: Option<u64>,
    pub locked_until_ms: Option<u64>,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        // Exhaustive like `project!`: a new stored field is a compile error here until shown or hidden.
        let User {
            name,
            role,
            tenant,
            status,
            password_hash: _,
            totp,
            generation: _,
            failures: _,
            locked_until_ms,
            last_totp_step: _,
            created_at_ms,
            last_sign_in_ms,
        } = u;
        UserView {
            name: name.to_string(),
            role: *role,
            tenant: tenant.as_ref().map(ToString::to_string),
            status: *status,
            totp_enrolled: totp.is_some(),
            created_at_ms: *created_at_ms,
            last_sign_in_ms: *last_sign_in_ms,
            locked_until_ms: *locked_until_ms,
        }
    }
}

/// A platform admin's user request (a tenant for owner, admin and member; none for platform admins).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserBody {
    #[schema(pattern = "^[a-z][a-z0-9_.-]{1,62}$")]
    pub name: String,
    pub role: UserRole,
    #[serde(default)]
    pub tenant: Option<String>,
}

/// A tenant owner's user request (the tenant is the path's).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantUserBody {
    #[schema(pattern = "^[a-z][a-z0-9_.-]{1,62}$")]
    pub name: String,
    pub role: UserRole,
}

/// A user and a password made for it, shown this once and stored only as a hash.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct UserWithPassword {
    pub user: UserView,
    pub initial_password: String,
}

impl std::fmt::Debug for UserWithPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserWithPassword").field("user", &self.user).finish_non_exhaustive()
    }
}

/// `POST /api/v1/users/{name}/{action}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UserAction {
    Disable,
    Enable,
    ResetMfa,
    ResetPassword,
}

/// The answer to a user action: the user as it is now, and the new password of `reset-password`
/// (shown this once).
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct UserActionAnswer {
    pub user: UserView,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_password: Option<String>,
}

impl std::fmt::Debug for UserActionAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserActionAnswer").field("user", &self.user).finish_non_exhaustive()
    }
}
