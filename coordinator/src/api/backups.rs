//! A tenant's backups over HTTP: list (catalog, policy, requests and their outcomes), run one
//! now, restore the newest at or before a time. An admin key or the tenant's own customer key;
//! another tenant's key is 403 and audited. Rotating a tenant's data key is admin-only. What is allowed is the domain's
//! (`state/backup/commands.rs`); the tenant's db node does the work and reports it.

use super::auth::{Ctx, Need};
use super::devices::tenant_scope;
use super::dto::{BackupsView, ErrorBody, RestoreBackupBody, RestoreMode};
use super::error::ApiError;
use super::extract::{clipped, path, Body, PathOf, Validate};
use super::Result;
use crate::state::action::Action;
use crate::state::backup::{BackupOp, TenantBackups};
use crate::state::names::TenantName;
use crate::state::{Op, Reply};
use axum::http::StatusCode;
use axum::Json;

fn target(tenant: &str) -> String {
    format!("{}/backups", clipped("tenant", tenant))
}

fn view(ctx: &Ctx, tenant: &TenantName, b: Option<&TenantBackups>) -> BackupsView {
    let (policy, db_node) = ctx
        .coordinator
        .read(|d| (d.state.backup_policy(tenant), d.state.tenants.get(tenant).and_then(|t| t.placement.db_node)));
    let mut v = BackupsView::new(tenant.as_str(), policy.unwrap_or_default(), b);
    v.progress =
        ctx.coordinator.backup_progress.get(tenant.as_str(), db_node, std::time::Instant::now()).map(Into::into);
    v
}

fn reply(ctx: &Ctx, tenant: &TenantName, r: Reply) -> Result<Json<BackupsView>> {
    match r {
        Reply::Backups(b) => Ok(Json(view(ctx, tenant, Some(&b)))),
        other => Err(ApiError::internal("backup command", format!("unexpected reply {other:?}"))),
    }
}

#[utoipa::path(get, path = "/api/v1/tenant/{name}/backups", params(("name" = String, Path)),
    responses((status = 200, body = BackupsView), (status = 404, description = "no such tenant", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn list_backups(ctx: Ctx, raw: PathOf<String>) -> Result<Json<BackupsView>> {
    let raw = path(raw)?;
    let (_scope, tenant) = tenant_scope(&ctx, Action::BackupList, &raw, target(&raw)).await?;
    super::barrier(&ctx, None).await?;
    let found = ctx.coordinator.read(|d| d.state.tenants.get(&tenant).map(|_| d.state.backups.get(&tenant).cloned()));
    match found {
        Some(b) => Ok(Json(view(&ctx, &tenant, b.as_ref()))),
        None => Err(ApiError::not_found(format!("tenant {tenant} not found"))),
    }
}

#[utoipa::path(post, path = "/api/v1/tenant/{name}/backups", params(("name" = String, Path)),
    responses((status = 202, description = "asked for; `run.id` names the request, `last_run` shows its end", body = BackupsView),
        (status = 404, description = "no such tenant", body = ErrorBody),
        (status = 409, description = "the tenant is not on a db node yet, is on SQL Server, or a backup is already under way", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn run_backup(ctx: Ctx, raw: PathOf<String>) -> Result<(StatusCode, Json<BackupsView>)> {
    let raw = path(raw)?;
    let (scope, tenant) = tenant_scope(&ctx, Action::BackupRun, &raw, target(&raw)).await?;
    let r = scope.run(Op::Backup(BackupOp::Run { tenant: tenant.clone() })).await?;
    Ok((StatusCode::ACCEPTED, reply(&ctx, &tenant, r)?))
}

impl Validate for RestoreBackupBody {
    type Valid = RestoreBackupBody;

    fn validate(self) -> std::result::Result<RestoreBackupBody, ApiError> {
        Ok(self)
    }
}

#[utoipa::path(post, path = "/api/v1/tenant/{name}/backups/restore", params(("name" = String, Path)),
    request_body = RestoreBackupBody,
    responses((status = 202, description = "asked for; `restore.id` names the request, `last_restore` shows its end", body = BackupsView),
        (status = 404, description = "no such tenant, or no backup at or before that time", body = ErrorBody),
        (status = 409, description = "the tenant is not active, is on SQL Server, or a restore is already under way", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn restore_backup(
    ctx: Ctx,
    raw: PathOf<String>,
    body: Body,
) -> Result<(StatusCode, Json<BackupsView>)> {
    let raw = path(raw)?;
    let (scope, tenant) = tenant_scope(&ctx, Action::BackupRestore, &raw, target(&raw)).await?;
    let RestoreBackupBody { at_ms, mode } = scope.body::<RestoreBackupBody>(body).await?;
    let op =
        BackupOp::Restore { tenant: tenant.clone(), at_ms, overwrite: mode == RestoreMode::Overwrite, schema: None };
    let r = scope.run(Op::Backup(op)).await?;
    Ok((StatusCode::ACCEPTED, reply(&ctx, &tenant, r)?))
}

#[utoipa::path(post, path = "/api/v1/tenant/{name}/backups/rotate-key", params(("name" = String, Path)),
    responses((status = 200, description = "the new data key is current: backups from now on are sealed with it, older ones keep theirs", body = BackupsView),
        (status = 403, description = "not an admin key", body = ErrorBody),
        (status = 404, description = "no such tenant", body = ErrorBody),
        (status = 409, description = "the tenant has no data key yet, or this coordinator holds no cluster backup key", body = ErrorBody)),
    security(("api_key" = [])))]
pub(super) async fn rotate_key(ctx: Ctx, raw: PathOf<String>) -> Result<Json<BackupsView>> {
    let raw = path(raw)?;
    let scope = ctx.scope(Need::Admin, Action::BackupKeyRotate, target(&raw)).await?;
    let tenant = scope.tenant(&raw).await?;
    let Some(cluster) = ctx.coordinator.backup_key.clone() else {
        let message =
            "this coordinator has no cluster backup key (backup.key): see `berqenas-coordinator backup init-key`";
        return Err(scope.refuse(ApiError::new(StatusCode::CONFLICT, "conflict", message)).await);
    };
    // The next id the state expects; a rotation racing another is refused there (409).
    let key_id = ctx.coordinator.read(|d| {
        let next = d.state.backups.get(&tenant).map_or(1, |b| b.next_key);
        format!("{tenant}-{next}")
    });
    let wrapped = crate::backupkey::random32()
        .and_then(|k| cluster.wrap(&tenant, &key_id, &k))
        .map_err(|e| ApiError::internal("backup key", format!("{e:#}")))?;
    let r = scope.run(Op::Backup(BackupOp::RotateKey { tenant: tenant.clone(), key: wrapped })).await?;
    reply(&ctx, &tenant, r)
}
