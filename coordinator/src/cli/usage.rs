//! `usage show`: a tenant's usage ledger for a month, one row per day and the totals, as a
//! table, JSON or CSV, over the REST API with the API's own types.

use super::client::{path_segment, Client};
use super::output::{self, say, table, Output};
use crate::api::dto::{UsageAmounts, UsageView};
use clap::Subcommand;
use serde::Serialize;

#[derive(Debug, Subcommand)]
pub enum UsageCmd {
    /// Per-day usage of a tenant in a month (UTC) and its totals.
    Show {
        #[arg(long)]
        tenant: String,
        /// A month as YYYY-MM (UTC); default: the current month.
        #[arg(long)]
        period: Option<String>,
    },
}

#[derive(Serialize)]
struct PeriodQuery<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    period: Option<&'a str>,
}

pub(super) async fn usage(client: &Client, cmd: UsageCmd, out: Output) -> anyhow::Result<()> {
    match cmd {
        UsageCmd::Show { tenant, period } => {
            let path = format!("/api/v1/tenant/{}/usage", path_segment(&tenant));
            let (view, _): (UsageView, _) =
                client.get_with_headers(&path, &PeriodQuery { period: period.as_deref() }).await?;
            match out {
                Output::Json => output::print_json(&view),
                Output::Csv => print!("{}", csv(&view)),
                Output::Table => {
                    say(format_args!("usage of {} in {} ({} to {})", view.tenant, view.period, view.from, view.to));
                    table(&HEADERS, rows(&view));
                }
            }
        }
    }
    Ok(())
}

const HEADERS: [&str; 8] = [
    "date",
    "disk_byte_hours",
    "disk_max_bytes",
    "peak_connections",
    "events",
    "vpn_rx_bytes",
    "vpn_tx_bytes",
    "api_calls",
];

fn row(label: &str, u: &UsageAmounts) -> Vec<String> {
    vec![
        label.to_string(),
        u.disk_byte_hours.to_string(),
        u.disk_max_bytes.to_string(),
        u.peak_connections.to_string(),
        u.events.to_string(),
        u.vpn_rx_bytes.to_string(),
        u.vpn_tx_bytes.to_string(),
        u.api_calls.to_string(),
    ]
}

/// The days, then a `total` row.
fn rows(view: &UsageView) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = view.days.iter().map(|d| row(&d.date, &d.usage)).collect();
    rows.push(row("total", &view.totals));
    rows
}

/// RFC 4180 CSV; every cell is a date, `total` or a number, so none needs quoting.
fn csv(view: &UsageView) -> String {
    let mut text = HEADERS.join(",") + "\r\n";
    for r in rows(view) {
        text += &r.join(",");
        text += "\r\n";
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::dto::UsageDay;

    #[test]
    fn csv_has_a_header_a_row_per_day_and_the_totals() {
        let day = UsageAmounts { disk_byte_hours: 24, events: 3, api_calls: 2, ..UsageAmounts::default() };
        let view = UsageView {
            tenant: "acme".into(),
            period: "2026-11".into(),
            from: "2026-11-01T00:00:00Z".into(),
            to: "2026-12-01T00:00:00Z".into(),
            days: vec![UsageDay { date: "2026-11-03".into(), usage: day }],
            totals: day,
        };
        assert_eq!(
            csv(&view),
            "date,disk_byte_hours,disk_max_bytes,peak_connections,events,vpn_rx_bytes,vpn_tx_bytes,api_calls\r\n\
             2026-11-03,24,0,0,3,0,0,2\r\ntotal,24,0,0,3,0,0,2\r\n"
        );
    }
}
