//! `user create|list|disable|enable|reset-mfa|reset-password`: panel users over the REST API
//! with the API's own types. A password is never taken on the command line: the coordinator makes
//! one and this prints it once.

use super::client::{path_segment, Client, NO_BODY};
use super::output::{self, say, table, Output};
use crate::api::dto::{CreateUserBody, UserActionAnswer, UserView, UserWithPassword};
use anyhow::Context;
use clap::Subcommand;
use reqwest::Method;

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// A new user; its initial password is printed once (TOTP enrolment at first sign-in for
    /// platform admins).
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = ["platform_admin", "owner", "admin", "member"])]
        role: String,
        /// The tenant of an owner, admin or member.
        #[arg(long)]
        tenant: Option<String>,
    },
    List,
    /// No sign-in; the user's sessions end.
    Disable {
        name: String,
    },
    Enable {
        name: String,
    },
    /// Removes the user's TOTP: it enrols again at its next sign-in (platform admins) and its
    /// sessions end.
    ResetMfa {
        name: String,
    },
    /// A new password, printed once; the user's sessions end and its lockout is lifted.
    ResetPassword {
        name: String,
    },
}

const HEADERS: [&str; 7] = ["NAME", "ROLE", "TENANT", "STATUS", "TOTP", "LAST SIGN-IN", "LOCKED UNTIL"];

fn row(u: &UserView) -> Vec<String> {
    let time = |t: Option<u64>| t.map(crate::time::rfc3339).unwrap_or_else(|| "-".into());
    vec![
        u.name.clone(),
        output::wire_name(&u.role),
        u.tenant.clone().unwrap_or_else(|| "-".into()),
        output::wire_name(&u.status),
        if u.totp_enrolled { "yes" } else { "no" }.into(),
        time(u.last_sign_in_ms),
        time(u.locked_until_ms),
    ]
}

pub(super) async fn run(client: &Client, cmd: UserCmd, out: Output) -> anyhow::Result<()> {
    let action = |name: &str, action: &str| format!("/api/v1/users/{}/{action}", path_segment(name));
    let (path, verb) = match cmd {
        UserCmd::Create { name, role, tenant } => {
            let role = serde_json::from_value(serde_json::Value::String(role.clone()))
                .with_context(|| format!("unknown role {role:?}"))?;
            let body = CreateUserBody { name, role, tenant };
            let created: UserWithPassword = client.send(Method::POST, "/api/v1/users", Some(&body)).await?;
            match out {
                Output::Json => output::print_json(&created),
                Output::Table | Output::Csv => {
                    say(format_args!("created user {} ({})", created.user.name, output::wire_name(&created.user.role)));
                    say(format_args!("initial password (shown once, hand it over now): {}", created.initial_password));
                }
            }
            return Ok(());
        }
        UserCmd::List => {
            let users: Vec<UserView> = client.get("/api/v1/users").await?;
            match out {
                Output::Json => output::print_json(&users),
                Output::Table | Output::Csv => table(&HEADERS, users.iter().map(row).collect()),
            }
            return Ok(());
        }
        UserCmd::Disable { name } => (action(&name, "disable"), "disabled"),
        UserCmd::Enable { name } => (action(&name, "enable"), "enabled"),
        UserCmd::ResetMfa { name } => (action(&name, "reset-mfa"), "reset the TOTP of"),
        UserCmd::ResetPassword { name } => (action(&name, "reset-password"), "reset the password of"),
    };
    let answer: UserActionAnswer = client.send(Method::POST, &path, NO_BODY).await?;
    match out {
        Output::Json => output::print_json(&answer),
        Output::Table | Output::Csv => {
            say(format_args!("{verb} user {}", answer.user.name));
            if let Some(p) = &answer.new_password {
                say(format_args!("new password (shown once, hand it over now): {p}"));
            }
        }
    }
    Ok(())
}
