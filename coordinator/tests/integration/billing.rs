//! Billing through the real coordinator binary and its CLI: a plan file given to `serve`, a
//! month's invoice created (base fee only until the usage ledger has data), created again (the
//! same invoice), issued, marked paid, exported as JSON, CSV, HTML and as Stripe and Iyzico
//! payloads; another tenant's customer key refused and audited; bad plan files stop the start.

use crate::harness::{stderr, Cluster, BIN};
use serde_json::Value;
use std::path::Path;

const PLANS: &str = r#"
issuer = "Berqenas <Cloud> & Co"
[plans.free]
currency = "EUR"
base_fee = "0"
disk_gb_month = "0.25"
events_million = "2"
vpn_gb = "0.05"
extra_connection = "1"
[plans.premium]
currency = "USD"
base_fee = "49.00"
disk_gb_month = "0.125"
events_million = "1.50"
vpn_gb = "0.02"
extra_connection = "0.75"
included_disk_gb_months = "10"
included_events_millions = "1"
included_vpn_gb = "50"
included_connections = 20
payment_terms_days = 30
[plans.enterprise]
currency = "TRY"
base_fee = "15000"
disk_gb_month = "4"
events_million = "40"
vpn_gb = "1"
extra_connection = "25"
"#;

const DAY_MS: u64 = 86_400_000;

fn fails(c: &Cluster, key: &str, args: &[&str]) -> String {
    let out = c.cli_as(0, key, args);
    assert!(!out.status.success(), "`{}` should fail", args.join(" "));
    stderr(&out)
}

#[test]
fn invoice_lifecycle_exports_and_tenant_isolation_through_the_cli() {
    let files = tempfile::tempdir().expect("temp dir");
    let plans = files.path().join("plans.toml");
    std::fs::write(&plans, PLANS).expect("write plans");
    let plans = plans.to_str().expect("utf-8 path");
    let c = Cluster::single_with(&["--billing-plans", plans]);
    c.json(0, &["tenant", "create", "--name", "acme", "--tier", "premium"]);
    c.json(0, &["tenant", "create", "--name", "globex"]);
    let admin = c.key.clone();

    // A month that has not ended is refused; so is a malformed one.
    let err = fails(&c, &admin, &["billing", "invoice", "--tenant", "acme", "--period", "9999-12"]);
    assert!(err.contains("has not ended"), "{err}");
    let err = fails(&c, &admin, &["billing", "invoice", "--tenant", "acme", "--period", "2026-13"]);
    assert!(err.contains("YYYY-MM"), "{err}");

    // The base fee alone (no usage recorded for the month), as a draft.
    let draft = c.json(0, &["billing", "invoice", "--tenant", "acme", "--period", "2026-11"]);
    assert_eq!(draft["id"], "acme-2026-11");
    assert_eq!(
        (&draft["status"], &draft["currency"], &draft["tier"]),
        (&Value::from("draft"), &Value::from("USD"), &Value::from("premium"))
    );
    assert_eq!(draft["lines"].as_array().map(Vec::len), Some(1), "{draft}");
    assert_eq!(draft["lines"][0]["kind"], "base_fee");
    assert_eq!(draft["lines"][0]["amount"], "49.00");
    assert_eq!((&draft["subtotal"], &draft["total"]), (&Value::from("49.00"), &Value::from("49.00")));
    assert_eq!(draft["issuer"], "Berqenas <Cloud> & Co");

    // Invoicing the month again gives the same invoice, not a second one.
    let again = c.json(0, &["billing", "invoice", "--tenant", "acme", "--period", "2026-11"]);
    assert_eq!(again, draft);
    let list = c.json(0, &["billing", "list", "--tenant", "acme"]);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");

    // A draft is neither paid nor sent to a provider.
    let err = fails(&c, &admin, &["billing", "mark-paid", "acme-2026-11"]);
    assert!(err.contains("draft"), "{err}");
    let err = fails(&c, &admin, &["billing", "export", "acme-2026-11", "--provider", "stripe"]);
    assert!(err.contains("issue it"), "{err}");

    let issued = c.json(0, &["billing", "issue", "acme-2026-11"]);
    assert_eq!(issued["status"], "issued");
    let issued_at = issued["issued_at_ms"].as_u64().expect("issued at");
    assert_eq!(issued["due_at_ms"].as_u64(), Some(issued_at + 30 * DAY_MS));
    let err = fails(&c, &admin, &["billing", "issue", "acme-2026-11"]);
    assert!(err.contains("already issued"), "{err}");

    // Exports of what the API returned.
    let json: Value = serde_json::from_str(&c.ok(0, &["billing", "export", "acme-2026-11", "--format", "json"]))
        .expect("JSON export");
    assert_eq!(json, c.json(0, &["billing", "show", "acme-2026-11"]));
    let csv = c.ok(0, &["billing", "export", "acme-2026-11", "--format", "csv"]);
    assert_eq!(
        csv,
        "invoice,tenant,period,currency,item,description,usage,included,quantity,unit,unit_price,amount\r\n\
acme-2026-11,acme,2026-11,USD,base_fee,\"Base fee (premium), 2026-11\",1,0,1,month,49,49.00\r\n\
acme-2026-11,acme,2026-11,USD,subtotal,,,,,,,49.00\r\n\
acme-2026-11,acme,2026-11,USD,total,,,,,,,49.00\r\n"
    );
    let html = c.ok(0, &["billing", "export", "acme-2026-11", "--format", "html"]);
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains("Invoice acme-2026-11"), "{html}");
    assert!(html.contains("Berqenas &lt;Cloud&gt; &amp; Co") && !html.contains("<Cloud>"), "escaped: {html}");
    assert!(!html.contains("http:") && !html.contains("https:") && !html.contains("src="), "self-contained: {html}");
    let stripe: Value = serde_json::from_str(&c.ok(0, &["billing", "export", "acme-2026-11", "--provider", "stripe"]))
        .expect("stripe JSON");
    assert_eq!(stripe["total"], 4900);
    assert_eq!(stripe["invoice"]["idempotency_key"], "berqenas-acme-2026-11");
    assert_eq!(stripe["invoice_items"][0]["amount"], 4900);
    assert_eq!(stripe["invoice_items"][0]["currency"], "usd");
    let iyzico: Value = serde_json::from_str(&c.ok(0, &["billing", "export", "acme-2026-11", "--provider", "iyzico"]))
        .expect("iyzico JSON");
    assert_eq!((&iyzico["price"], &iyzico["paidPrice"]), (&Value::from("49.00"), &Value::from("49.00")));
    assert_eq!(iyzico["basketItems"][0]["price"], "49.00");
    assert_eq!(iyzico["basketId"], "acme-2026-11");

    // Another tenant's customer key sees nothing of acme's invoices; acme's own key reads them
    // but cannot change them.
    let globex_key = c.json(0, &["apikey", "create", "--role", "customer", "--tenant", "globex"])["token"]
        .as_str()
        .expect("token")
        .to_string();
    let acme_key = c.json(0, &["apikey", "create", "--role", "customer", "--tenant", "acme"])["token"]
        .as_str()
        .expect("token")
        .to_string();
    for args in [
        &["billing", "show", "acme-2026-11"][..],
        &["billing", "list", "--tenant", "acme"],
        &["billing", "export", "acme-2026-11", "--format", "html"],
        &["billing", "mark-paid", "acme-2026-11"],
    ] {
        let err = fails(&c, &globex_key, args);
        assert!(err.contains("403") || err.contains("may not"), "{args:?}: {err}");
    }
    let err = fails(&c, &globex_key, &["billing", "show", "globex-2026-11"]);
    assert!(err.contains("no invoice"), "its own tenant has none: {err}");
    let own = c.cli_as(0, &acme_key, &["billing", "list", "--tenant", "acme", "--output", "json"]);
    assert!(own.status.success(), "{}", stderr(&own));
    let own: Value = serde_json::from_slice(&own.stdout).expect("JSON");
    assert_eq!(own[0]["id"], "acme-2026-11");
    for args in [
        &["billing", "mark-paid", "acme-2026-11"][..],
        &["billing", "invoice", "--tenant", "acme", "--period", "2026-10"],
    ] {
        let err = fails(&c, &acme_key, args);
        assert!(err.contains("may not"), "admin only: {args:?}: {err}");
    }

    let paid = c.json(0, &["billing", "mark-paid", "acme-2026-11"]);
    assert_eq!(paid["status"], "paid");
    assert!(paid["paid_at_ms"].as_u64().is_some());
    let err = fails(&c, &admin, &["billing", "mark-paid", "acme-2026-11"]);
    assert!(err.contains("already paid"), "{err}");
    assert_eq!(c.json(0, &["billing", "invoice", "--tenant", "acme", "--period", "2026-11"])["status"], "paid");

    // Every change and every refusal is in the audit trail.
    let trail = c.json(0, &["audit", "list", "--tenant", "acme", "--limit", "1000"]);
    let entries: Vec<(String, String, String)> = trail
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["action"].as_str().is_some_and(|a| a.starts_with("invoice.")))
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (s("action"), s("target"), s("outcome"))
        })
        .collect();
    let has = |action: &str, outcome: &str| {
        entries.iter().any(|(a, t, o)| a == action && o == outcome && t.contains("tenant/acme/invoice"))
    };
    for (action, outcome) in [
        ("invoice.create", "ok"),
        ("invoice.issue", "ok"),
        ("invoice.mark-paid", "ok"),
        ("invoice.mark-paid", "rejected"),
        ("invoice.get", "rejected"),
        ("invoice.list", "rejected"),
    ] {
        assert!(has(action, outcome), "{action} {outcome} audited: {entries:#?}");
    }
}

#[test]
fn without_a_plan_file_invoicing_is_refused_and_a_bad_file_stops_serve() {
    let c = Cluster::single();
    c.json(0, &["tenant", "create", "--name", "acme"]);
    let err = fails(&c, &c.key, &["billing", "invoice", "--tenant", "acme", "--period", "2026-11"]);
    assert!(err.contains("--billing-plans"), "{err}");
    assert_eq!(c.json(0, &["billing", "list", "--tenant", "acme"]), Value::Array(vec![]));

    let files = tempfile::tempdir().expect("temp dir");
    for (edit, message) in [
        (("currency = \"TRY\"", "currency = \"XTS\""), "unknown currency"),
        (("vpn_gb = \"0.02\"", "vpn_gb = \"-0.02\""), "vpn_gb is negative"),
        (("[plans.enterprise]", "[plans.gold]"), "unknown tier"),
    ] {
        let path = files.path().join("plans.toml");
        std::fs::write(&path, PLANS.replacen(edit.0, edit.1, 1)).expect("write plans");
        let dir = files.path().join("data");
        let out = berqenas_tests::run(
            Path::new(BIN),
            &["serve", "--data-dir", dir.to_str().expect("utf-8"), "--billing-plans", path.to_str().expect("utf-8")],
            &[],
        );
        assert!(!out.status.success() && stderr(&out).contains(message), "{message}: {}", stderr(&out));
    }
}
