//! The gateway commands of the CLI: `device`, `expose` and `firewall`, over the REST API with the
//! API's own types (`api::dto`).

use super::client::{path_segment, Client, NO_BODY};
use super::output::{self, say, Output};
use super::wire;
use crate::api::dto::{
    AddDeviceBody, AddExposureBody, AddRuleBody, BlockDomainBody, DeviceConfigView, DeviceView, ExposureView, RuleView,
};
use anyhow::Context;
use clap::Subcommand;
use reqwest::Method;

#[derive(Debug, Subcommand)]
pub enum DeviceCmd {
    /// Register a device by its WireGuard public key (bring your own key).
    Add {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        public_key: String,
        /// An address of the tenant's /24; the next free one when absent.
        #[arg(long)]
        address: Option<String>,
    },
    List {
        #[arg(long)]
        tenant: String,
    },
    Show {
        name: String,
        #[arg(long)]
        tenant: String,
    },
    /// Remove a device (refused while exposures or firewall rules name it).
    Rm {
        name: String,
        #[arg(long)]
        tenant: String,
    },
    /// Keep the device's address and key but stop it being a peer.
    Disable {
        name: String,
        #[arg(long)]
        tenant: String,
    },
    Enable {
        name: String,
        #[arg(long)]
        tenant: String,
    },
    /// Let a pending device (token with --approve manual) become a peer of its gateway.
    Approve {
        name: String,
        #[arg(long)]
        tenant: String,
    },
    /// Remove the device's peer and refuse its certificate; the record stays, marked revoked.
    Revoke {
        name: String,
        #[arg(long)]
        tenant: String,
    },
    /// Enrollment tokens for `berqenas-device enroll`.
    #[command(subcommand)]
    Token(super::devicetoken::DeviceTokenCmd),
    /// Print the device's config (its private key is a placeholder: the key is yours).
    Config {
        name: String,
        #[arg(long)]
        tenant: String,
        #[arg(long, value_parser = ["wg-quick"], default_value = "wg-quick")]
        format: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ExposeCmd {
    /// Publish a device's port on the tenant gateway's public address.
    Add {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        device: String,
        #[arg(long)]
        port: u16,
        /// From the gateway's public range; the lowest free one when absent.
        #[arg(long)]
        public_port: Option<u16>,
        #[arg(long, value_parser = ["tcp", "udp"], default_value = "tcp")]
        proto: String,
        /// Source networks allowed to connect (repeatable); anyone when absent.
        #[arg(long)]
        allow: Vec<String>,
        /// New connections per second, e.g. 100/s.
        #[arg(long)]
        rate: Option<String>,
        /// keep: the service sees the client's address (the device routes replies through the
        /// tunnel; see `device config`); nat: it sees the gateway's.
        #[arg(long, value_parser = ["keep", "nat"], default_value = "nat")]
        source: String,
    },
    List {
        #[arg(long)]
        tenant: String,
    },
    /// One exposure with its counters and the sources seen.
    Show {
        id: String,
        #[arg(long)]
        tenant: String,
    },
    Enable {
        id: String,
        #[arg(long)]
        tenant: String,
    },
    /// Stop forwarding; the public port is kept.
    Disable {
        id: String,
        #[arg(long)]
        tenant: String,
    },
    Rm {
        id: String,
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum FirewallCmd {
    /// Add an ordered rule (the first match decides).
    Add {
        #[arg(long)]
        tenant: String,
        #[arg(long, value_parser = ["allow", "deny"], default_value = "deny")]
        verdict: String,
        /// Source networks (repeatable); any when absent.
        #[arg(long = "source")]
        sources: Vec<String>,
        /// Destination networks (repeatable).
        #[arg(long = "destination")]
        destinations: Vec<String>,
        /// Destination devices by name (repeatable; each as its /32).
        #[arg(long = "device")]
        devices: Vec<String>,
        /// Source devices by label: the tenant's active devices carrying every KEY=VALUE given
        /// (repeatable or comma-separated), enrolled later included; matching none, the rule
        /// matches nothing.
        #[arg(long = "src-label", value_name = "KEY=VALUE", value_delimiter = ',')]
        source_labels: Vec<String>,
        /// Destination devices by label, like --src-label.
        #[arg(long = "dst-label", value_name = "KEY=VALUE", value_delimiter = ',')]
        destination_labels: Vec<String>,
        /// A port or range: 443, 8000-8100.
        #[arg(long)]
        ports: Option<String>,
        #[arg(long, value_parser = ["tcp", "udp", "any"], default_value = "any")]
        proto: String,
        /// Reachable only from inside the tenant subnet.
        #[arg(long)]
        vpn_required: bool,
        #[arg(long)]
        position: Option<u32>,
    },
    List {
        #[arg(long)]
        tenant: String,
    },
    Rm {
        id: String,
        #[arg(long)]
        tenant: String,
    },
    /// Block a domain for the tenant's devices.
    BlockDomain {
        domain: String,
        #[arg(long)]
        tenant: String,
    },
    UnblockDomain {
        domain: String,
        #[arg(long)]
        tenant: String,
    },
    /// The tenant's blocked domains.
    Domains {
        #[arg(long)]
        tenant: String,
    },
}

fn under(tenant: &str, rest: &str) -> String {
    format!("/api/v1/tenant/{}/{rest}", path_segment(tenant))
}

pub(super) async fn device(client: &Client, cmd: DeviceCmd, out: Output) -> anyhow::Result<()> {
    let d = |t: &str, n: &str| under(t, &format!("devices/{}", path_segment(n)));
    let shown: DeviceView = match cmd {
        DeviceCmd::Add { tenant, name, public_key, address } => {
            let body = AddDeviceBody { name, public_key, address };
            client.send(Method::POST, &under(&tenant, "devices"), Some(&body)).await?
        }
        DeviceCmd::List { tenant } => {
            output::devices(out, &client.get::<Vec<DeviceView>>(&under(&tenant, "devices")).await?);
            return Ok(());
        }
        DeviceCmd::Show { name, tenant } => client.get(&d(&tenant, &name)).await?,
        DeviceCmd::Rm { name, tenant } => client.send(Method::DELETE, &d(&tenant, &name), NO_BODY).await?,
        DeviceCmd::Disable { name, tenant } => {
            client.send(Method::POST, &format!("{}/disable", d(&tenant, &name)), NO_BODY).await?
        }
        DeviceCmd::Enable { name, tenant } => {
            client.send(Method::POST, &format!("{}/enable", d(&tenant, &name)), NO_BODY).await?
        }
        DeviceCmd::Approve { name, tenant } => {
            client.send(Method::POST, &format!("{}/approve", d(&tenant, &name)), NO_BODY).await?
        }
        DeviceCmd::Revoke { name, tenant } => {
            client.send(Method::POST, &format!("{}/revoke", d(&tenant, &name)), NO_BODY).await?
        }
        DeviceCmd::Token(cmd) => return super::devicetoken::token(client, cmd, out).await,
        DeviceCmd::Config { name, tenant, format } => {
            let path = format!("{}/config?format={}", d(&tenant, &name), path_segment(&format));
            let config: DeviceConfigView = client.get(&path).await?;
            match out {
                Output::Json => output::print_json(&config),
                Output::Table | Output::Csv => {
                    say(format_args!("{}", config.config.trim_end()));
                    for m in &config.missing {
                        eprintln!("incomplete: {m}");
                    }
                }
            }
            return Ok(());
        }
    };
    output::device(out, &shown);
    Ok(())
}

/// `100/s` or `100` → 100.
fn rate(raw: &str) -> anyhow::Result<u32> {
    raw.strip_suffix("/s").unwrap_or(raw).parse().with_context(|| format!("--rate {raw:?} must be N/s, e.g. 100/s"))
}

pub(super) async fn expose(client: &Client, cmd: ExposeCmd, out: Output) -> anyhow::Result<()> {
    let x = |t: &str, id: &str| under(t, &format!("exposures/{}", path_segment(id)));
    let shown: ExposureView = match cmd {
        ExposeCmd::Add { tenant, device, port, public_port, proto, allow, rate: r, source } => {
            let body = AddExposureBody {
                device,
                port,
                public_port,
                protocol: wire(Some(proto))?,
                allow: Some(allow).filter(|a| !a.is_empty()),
                rate_per_second: r.as_deref().map(rate).transpose()?,
                source: wire(Some(source))?,
            };
            client.send(Method::POST, &under(&tenant, "exposures"), Some(&body)).await?
        }
        ExposeCmd::List { tenant } => {
            output::exposures(out, &client.get::<Vec<ExposureView>>(&under(&tenant, "exposures")).await?);
            return Ok(());
        }
        ExposeCmd::Show { id, tenant } => client.get(&x(&tenant, &id)).await?,
        ExposeCmd::Enable { id, tenant } => {
            client.send(Method::POST, &format!("{}/enable", x(&tenant, &id)), NO_BODY).await?
        }
        ExposeCmd::Disable { id, tenant } => {
            client.send(Method::POST, &format!("{}/disable", x(&tenant, &id)), NO_BODY).await?
        }
        ExposeCmd::Rm { id, tenant } => client.send(Method::DELETE, &x(&tenant, &id), NO_BODY).await?,
    };
    output::exposure(out, &shown);
    Ok(())
}

pub(super) async fn firewall(client: &Client, cmd: FirewallCmd, out: Output) -> anyhow::Result<()> {
    let domains: Vec<String> = match cmd {
        FirewallCmd::Add {
            tenant,
            verdict,
            sources,
            destinations,
            devices,
            source_labels,
            destination_labels,
            ports,
            proto,
            vpn_required,
            position,
        } => {
            let selector = |items: &[String]| super::parse_selector(items).map(|m| Some(m).filter(|m| !m.is_empty()));
            let body = AddRuleBody {
                position,
                verdict: wire(Some(verdict))?,
                sources: Some(sources).filter(|v| !v.is_empty()),
                destinations: Some(destinations).filter(|v| !v.is_empty()),
                devices: Some(devices).filter(|v| !v.is_empty()),
                source_labels: selector(&source_labels)?,
                destination_labels: selector(&destination_labels)?,
                ports,
                protocol: wire(Some(proto))?,
                vpn_required: vpn_required.then_some(true),
            };
            let rule: RuleView = client.send(Method::POST, &under(&tenant, "firewall/rule"), Some(&body)).await?;
            output::rules(out, &[rule]);
            return Ok(());
        }
        FirewallCmd::List { tenant } => {
            output::rules(out, &client.get::<Vec<RuleView>>(&under(&tenant, "firewall/rule")).await?);
            return Ok(());
        }
        FirewallCmd::Rm { id, tenant } => {
            let path = under(&tenant, &format!("firewall/rule/{}", path_segment(&id)));
            let rule: RuleView = client.send(Method::DELETE, &path, NO_BODY).await?;
            output::rules(out, &[rule]);
            return Ok(());
        }
        FirewallCmd::BlockDomain { domain, tenant } => {
            let body = BlockDomainBody { domain };
            client.send(Method::POST, &under(&tenant, "firewall/domains"), Some(&body)).await?
        }
        FirewallCmd::UnblockDomain { domain, tenant } => {
            let path = under(&tenant, &format!("firewall/domains/{}", path_segment(&domain)));
            client.send(Method::DELETE, &path, NO_BODY).await?
        }
        FirewallCmd::Domains { tenant } => client.get(&under(&tenant, "firewall/domains")).await?,
    };
    match out {
        Output::Json => output::print_json(&domains),
        Output::Table | Output::Csv => domains.iter().for_each(|d| say(format_args!("{d}"))),
    }
    Ok(())
}
