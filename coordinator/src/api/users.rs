//! Panel users over HTTP: platform admins (or admin keys) list and create users of any kind and
//! disable, enable or reset them; a tenant's owners list and create its users. A new password is
//! made here, hashed here (Argon2id, never in Raft as text), and shown once in the answer.

use super::auth::{Ctx, Need};
use super::devices::tenant_scope;
use super::dto::{
    CreateTenantUserBody, CreateUserBody, ErrorBody, UserAction, UserActionAnswer, UserView, UserWithPassword,
};
use super::error::ApiError;
use super::extract::{clipped, path, Body, PathOf, Scope, Validate};
use super::Result;
use crate::state::action::Action;
use crate::state::names::TenantName;
use crate::state::user::{User, UserName, UserOp, UserRole, UserStatus};
use crate::state::{Op, Reply};
use axum::http::StatusCode;
use axum::Json;

/// A user request, checked.
pub struct NewUser {
    name: UserName,
    role: UserRole,
    tenant: Option<TenantName>,
}

impl Validate for CreateUserBody {
    type Valid = NewUser;
    fn validate(self) -> std::result::Result<NewUser, ApiError> {
        let name = UserName::parse(&self.name).map_err(|e| ApiError::invalid(e.to_string()))?;
        let tenant =
            self.tenant.as_deref().map(TenantName::parse).transpose().map_err(|e| ApiError::invalid(e.to_string()))?;
        match (self.role, &tenant) {
            (UserRole::PlatformAdmin, Some(_)) => Err(ApiError::invalid("a platform admin belongs to no tenant")),
            (UserRole::Owner | UserRole::Admin | UserRole::Member, None) => {
                Err(ApiError::invalid("an owner, admin or member must name its tenant"))
            }
            _ => Ok(NewUser { name, role: self.role, tenant }),
        }
    }
}

fn user_reply(reply: Reply) -> Result<User> {
    match reply {
        Reply::User(u) => Ok(*u),
        other => Err(ApiError::internal("user command", format!("unexpected reply {other:?}"))),
    }
}

/// A new password and its Argon2id hash (off the async threads).
async fn new_password() -> Result<(String, String)> {
    tokio::task::spawn_blocking(|| {
        let password = crate::password::generate()?;
        let hash = crate::password::hash(&password)?;
        anyhow::Ok((password, hash))
    })
    .await
    .map_err(|e| ApiError::internal("password", e))?
    .map_err(|e| ApiError::internal("password", e))
}

async fn create(scope: &Scope<'_>, new: NewUser) -> Result<(StatusCode, Json<UserWithPassword>)> {
    let (password, password_hash) = new_password().await?;
    let user = User {
        name: new.name,
        role: new.role,
        tenant: new.tenant,
        status: UserStatus::Active,
        password_hash,
        totp: None,
        generation: 0,
        failures: 0,
        locked_until_ms: None,
        last_totp_step: None,
        created_at_ms: crate::time::now_ms(),
        last_sign_in_ms: None,
    };
    let user = user_reply(scope.run(Op::User(UserOp::Create(Box::new(user)))).await?)?;
    Ok((StatusCode::CREATED, Json(UserWithPassword { user: UserView::from(&user), initial_password: password })))
}

#[utoipa::path(get, path = "/api/v1/users",
    responses((status = 200, body = Vec<UserView>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("api_key" = []), ("session" = [])))]
pub(super) async fn list_users(ctx: Ctx) -> Result<Json<Vec<UserView>>> {
    ctx.scope(Need::Admin, Action::UserList, "users").await?;
    Ok(Json(ctx.coordinator.read(|d| d.state.users.values().map(UserView::from).collect())))
}

#[utoipa::path(post, path = "/api/v1/users", request_body = CreateUserBody,
    responses((status = 201, body = UserWithPassword), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, description = "the tenant does not exist", body = ErrorBody),
        (status = 409, description = "the user exists", body = ErrorBody)),
    security(("api_key" = []), ("session" = [])))]
pub(super) async fn create_user(ctx: Ctx, body: Body) -> Result<(StatusCode, Json<UserWithPassword>)> {
    let scope = ctx.scope(Need::Admin, Action::UserCreate, "user").await?;
    let new = scope.body::<CreateUserBody>(body).await?;
    create(&scope, new).await
}

#[utoipa::path(post, path = "/api/v1/users/{user}/{action}",
    params(("user" = String, Path), ("action" = UserAction, Path)),
    responses((status = 200, body = UserActionAnswer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = []), ("session" = [])))]
pub(super) async fn user_action(ctx: Ctx, raw: PathOf<(String, String)>) -> Result<Json<UserActionAnswer>> {
    let (raw_name, raw_action) = path(raw)?;
    let parsed: std::result::Result<UserAction, _> =
        serde_json::from_value(serde_json::Value::String(raw_action.clone()));
    let action = match parsed {
        Ok(UserAction::Disable) => Action::UserDisable,
        Ok(UserAction::Enable) => Action::UserEnable,
        Ok(UserAction::ResetMfa) => Action::UserResetMfa,
        Ok(UserAction::ResetPassword) => Action::UserResetPassword,
        Err(_) => Action::UserList,
    };
    let scope = ctx.scope(Need::Admin, action, clipped("user", &raw_name)).await?;
    let Ok(which) = parsed else {
        let err = ApiError::not_found(format!("no user action {:?}", raw_action.chars().take(32).collect::<String>()));
        return Err(scope.refuse(err).await);
    };
    let name = scope.check(UserName::parse(&raw_name).map_err(|e| ApiError::invalid(e.to_string()))).await?;
    let (op, new_password) = match which {
        UserAction::Disable => (UserOp::SetActive { name, active: false }, None),
        UserAction::Enable => (UserOp::SetActive { name, active: true }, None),
        UserAction::ResetMfa => (UserOp::ResetMfa { name }, None),
        UserAction::ResetPassword => {
            let (password, password_hash) = new_password().await?;
            (UserOp::ResetPassword { name, password_hash }, Some(password))
        }
    };
    let user = user_reply(scope.run(Op::User(op)).await?)?;
    Ok(Json(UserActionAnswer { user: UserView::from(&user), new_password }))
}

#[utoipa::path(get, path = "/api/v1/tenant/{name}/users", params(("name" = String, Path)),
    responses((status = 200, body = Vec<UserView>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("api_key" = []), ("session" = [])))]
pub(super) async fn list_tenant_users(ctx: Ctx, raw: PathOf<String>) -> Result<Json<Vec<UserView>>> {
    let raw = path(raw)?;
    let (_scope, tenant) =
        tenant_scope(&ctx, Action::UserList, &raw, format!("{}/users", clipped("tenant", &raw))).await?;
    Ok(Json(
        ctx.coordinator.read(|d| {
            d.state.users.values().filter(|u| u.tenant.as_ref() == Some(&tenant)).map(UserView::from).collect()
        }),
    ))
}

#[utoipa::path(post, path = "/api/v1/tenant/{name}/users", params(("name" = String, Path)),
    request_body = CreateTenantUserBody,
    responses((status = 201, body = UserWithPassword), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = []), ("session" = [])))]
pub(super) async fn create_tenant_user(
    ctx: Ctx,
    raw: PathOf<String>,
    body: Body,
) -> Result<(StatusCode, Json<UserWithPassword>)> {
    let raw = path(raw)?;
    let (scope, tenant) =
        tenant_scope(&ctx, Action::UserCreate, &raw, format!("{}/users", clipped("tenant", &raw))).await?;
    let b = scope.raw_body::<CreateTenantUserBody>(body).await?;
    let checked = CreateUserBody { name: b.name, role: b.role, tenant: Some(tenant.to_string()) }.validate();
    let new = scope.check(checked).await?;
    create(&scope, new).await
}
