//! `device token create|list|revoke`: enrollment tokens over the REST API with the API's own
//! types. `create` prints the token once, with the exact command to run on the device.

use super::client::{path_segment, Client, NO_BODY};
use super::output::{self, say, Output};
use super::{parse_selector, wire};
use crate::api::dto::{CreateDeviceTokenBody, CreatedDeviceToken, DeviceTokenView};
use clap::Subcommand;
use reqwest::Method;

#[derive(Debug, Subcommand)]
pub enum DeviceTokenCmd {
    /// Mint a token devices enroll with (`berqenas-device enroll`); shown once.
    Create {
        #[arg(long)]
        tenant: String,
        /// The enrolled device's name (later ones get NAME-2, NAME-3, …); default: the device's choice.
        #[arg(long)]
        name: Option<String>,
        /// How long it can be used (1s to 7d).
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// How many devices it may enroll: 1, a count, or unlimited.
        #[arg(long, default_value = "1")]
        uses: String,
        /// Labels the enrolled devices get: --labels site=ist line=2 (or site=ist,line=2)
        #[arg(long, value_name = "KEY=VALUE", num_args = 1.., value_delimiter = ',')]
        labels: Vec<String>,
        /// Remove enrolled devices after this long offline (at least 1m), e.g. 30m.
        #[arg(long, value_name = "OFFLINE_TIME")]
        ephemeral: Option<String>,
        /// manual: enrolled devices stay pending until `device approve`.
        #[arg(long, value_parser = ["auto", "manual"], default_value = "auto")]
        approve: String,
        /// Enrolled devices publish events from outside the VPN (tenant needs public_api): each
        /// publish then carries a customer key and the device's enrolled fingerprint.
        #[arg(long)]
        public: bool,
    },
    /// The tenant's tokens: prefix, uses, expiry, labels, revoked (never secrets).
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Revoke a token; devices enrolled with it stay.
    Revoke {
        id: String,
        #[arg(long)]
        tenant: String,
    },
}

fn tokens_path(tenant: &str) -> String {
    format!("/api/v1/tenant/{}/device-tokens", path_segment(tenant))
}

pub(super) async fn token(client: &Client, cmd: DeviceTokenCmd, out: Output) -> anyhow::Result<()> {
    match cmd {
        DeviceTokenCmd::Create { tenant, name, ttl, uses, labels, ephemeral, approve, public } => {
            let body = CreateDeviceTokenBody {
                name,
                ttl: Some(ttl),
                uses: Some(uses),
                labels: Some(parse_selector(&labels)?),
                ephemeral,
                approve: wire(Some(approve))?,
                public: Some(public),
            };
            let created: CreatedDeviceToken = client.send(Method::POST, &tokens_path(&tenant), Some(&body)).await?;
            match out {
                Output::Json => output::print_json(&created),
                Output::Table | Output::Csv => {
                    let t = &created.device_token;
                    let uses = t.max_uses.map_or_else(|| "unlimited uses".to_string(), |m| format!("{m} use(s)"));
                    say(format_args!("device token for tenant {} ({uses}, shown once): {}", t.tenant, created.token));
                    say(format_args!("expires: {}", crate::time::rfc3339(t.expires_at_ms)));
                    say(format_args!("run on the device:\n  {}", created.command));
                }
            }
        }
        DeviceTokenCmd::List { tenant } => {
            output::device_tokens(out, &client.get::<Vec<DeviceTokenView>>(&tokens_path(&tenant)).await?);
        }
        DeviceTokenCmd::Revoke { id, tenant } => {
            let path = format!("{}/{}", tokens_path(&tenant), path_segment(&id));
            let token: DeviceTokenView = client.send(Method::DELETE, &path, NO_BODY).await?;
            output::device_tokens(out, &[token]);
        }
    }
    Ok(())
}
