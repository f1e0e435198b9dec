//! The web panel in a real browser (headless Chromium through chromedriver) against the real
//! coordinator binary serving its API over TLS: the white label leaves no other product name on
//! the page, the security headers are there, and the pages work as a user drives them (a tenant
//! owner's backup and restore against a real PostgreSQL and S3 server in the lab, reached through a
//! forwarded port). Screenshots of the main pages go to `docs/screenshots/` (README "Panel").

use crate::db::setup_configured;
use crate::harness::Fleet;
use berqenas_tests::panel::{field, press, sign_in, sign_out, WAIT};
use berqenas_tests::s3::S3;
use berqenas_tests::webdriver::Browser;
use berqenas_tests::workspace_root;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

fn shot(name: &str) -> PathBuf {
    workspace_root().join("docs").join("screenshots").join(format!("{name}.png"))
}

fn screenshot(b: &Browser, name: &str) {
    b.screenshot(&shot(name));
}

/// `fetch(path)` in the page: status, the headers asked for, and the body text.
fn fetch(b: &Browser, path: &str, headers: &[&str]) -> Value {
    b.exec(
        "const [path, names] = arguments;
         return fetch(path, {credentials: 'same-origin'}).then(async (r) => ({
           status: r.status,
           headers: Object.fromEntries(names.map((n) => [n, r.headers.get(n)])),
           body: await r.text(),
         }));",
        vec![json!(path), json!(headers)],
    )
}

fn branding_file(dir: &std::path::Path) -> PathBuf {
    std::fs::write(
        dir.join("logo.svg"),
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 10 10\"><circle cx=\"5\" cy=\"5\" r=\"5\" fill=\"#7a1f1f\"/></svg>",
    )
    .expect("logo");
    let file = dir.join("branding.toml");
    std::fs::write(
        &file,
        "product_name = \"Acme Cloud\"\nlogo = \"logo.svg\"\nprimary_color = \"#7a1f1f\"\naccent_color = \"#225522\"\n\
         support_url = \"https://help.example.com/\"\n",
    )
    .expect("branding file");
    file
}

#[test]
fn a_branded_panel_shows_only_its_brand_under_a_strict_policy() {
    let brand = tempfile::tempdir().expect("tmp");
    let file = branding_file(brand.path());
    let f = Fleet::new_with(1, &["--api-tls", "on", "--branding", file.to_str().expect("utf-8")]);
    let b = Browser::start(f.tmp.path(), 1280, 900);
    let base = f.endpoint(0);
    b.goto(&format!("{base}/"));
    b.wait_text("h1", "Sign in", WAIT);

    let html = b.exec("return document.documentElement.outerHTML", vec![]);
    let html = html.as_str().unwrap_or_default();
    let title = b.exec("return document.title", vec![]);
    let text = b.page_text();
    for (what, s) in [("page source", html), ("title", title.as_str().unwrap_or_default()), ("page text", &text)] {
        assert!(!s.contains("Berqenas"), "{what} names another product: {s}");
        assert!(s.contains("Acme Cloud"), "{what} names the brand: {s}");
    }
    // The logo is served from this coordinator and loads; the support link is the configured one.
    let logo = b.wait("header img.logo", WAIT);
    assert!(b.attr(&logo, "src").unwrap_or_default().ends_with("/logo.svg"));
    b.wait_until("the logo to load", WAIT, || {
        (b.exec("return document.querySelector('header img.logo').naturalWidth", vec![]).as_u64()? > 0).then_some(())
    });
    let support = b.wait("footer a", WAIT);
    assert_eq!(b.attr(&support, "href").as_deref(), Some("https://help.example.com/"));

    let brand = fetch(&b, "/api/v1/branding", &[]);
    let brand: Value = serde_json::from_str(brand["body"].as_str().expect("body")).expect("JSON");
    assert_eq!(brand["product_name"], "Acme Cloud", "{brand}");
    assert_eq!(brand["primary_color"], "#7a1f1f");
    assert!(brand["logo_url"].as_str().is_some_and(|u| u.ends_with("/logo.svg")), "{brand}");

    // The page and its assets: strict policy, no sniffing, no framing; assets cached by version.
    let page =
        fetch(&b, "/", &["content-security-policy", "x-content-type-options", "x-frame-options", "cache-control"]);
    let h = &page["headers"];
    let csp = h["content-security-policy"].as_str().unwrap_or_default();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{page}");
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    // The page's one inline script (the early session and data requests) ran under that policy.
    let boot = b.exec("return window.panelEarly ? [...window.panelEarly.early.keys()] : null", vec![]);
    assert!(boot.as_array().is_some_and(|paths| paths.contains(&json!("/api/v1/session"))), "boot script ran: {boot}");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["cache-control"], "no-cache");
    let css = b.exec("return document.querySelector('link[rel=stylesheet]').getAttribute('href')", vec![]);
    let css = css.as_str().expect("stylesheet link").to_string();
    let asset = fetch(&b, &css, &["content-type", "cache-control"]);
    assert_eq!(asset["status"], 200, "{asset}");
    assert_eq!(asset["headers"]["content-type"], "text/css; charset=utf-8");
    assert!(asset["headers"]["cache-control"].as_str().unwrap_or_default().contains("immutable"), "{asset}");
    let brand_css = fetch(&b, &css.replace("app.css", "brand.css"), &[]);
    assert!(brand_css["body"].as_str().unwrap_or_default().contains("--primary:#7a1f1f"), "{brand_css}");

    // Every transferred byte of the first page, as the browser counted them.
    let weight = b.exec(
        "return performance.getEntriesByType('resource').reduce((n, e) => n + e.encodedBodySize, 0)
              + performance.getEntriesByType('navigation')[0].encodedBodySize",
        vec![],
    );
    assert!(weight.as_u64().expect("bytes") < 100 * 1024, "first page {weight} bytes");
    screenshot(&b, "signin-branded");

    // A platform admin's TOTP enrolment: the QR code and the authenticator's entry carry the brand.
    let root = f.json(0, &["user", "create", "--name", "root", "--role", "platform_admin"]);
    field(&b, "username", "root");
    field(&b, "password", root["initial_password"].as_str().expect("initial password"));
    press(&b, "Sign in");
    let secret = b.text(&b.wait("#totp-secret", WAIT)).replace(' ', "");
    berqenas_tests::panel::assert_enrol_qr(&b, &secret);
    let uri = b.exec("return document.querySelector(\"main a[href^='otpauth://']\").getAttribute('href')", vec![]);
    let uri = uri.as_str().unwrap_or_default();
    assert!(uri.starts_with("otpauth://totp/Acme%20Cloud:root?") && uri.contains("issuer=Acme%20Cloud"), "{uri}");
    let html = b.exec("return document.documentElement.outerHTML", vec![]);
    assert!(!html.as_str().unwrap_or_default().contains("Berqenas"), "the enrolment page names no other product");
}

#[test]
fn an_admin_and_a_customer_drive_the_panel_in_a_browser() {
    let mut f = Fleet::new_with(1, &["--api-tls", "on"]);
    // A gateway (dir driver) with public ports, so exposures get a public endpoint.
    let tenants = f.tmp.path().join("gw").join("tenants");
    let tenants = tenants.to_str().expect("utf-8").to_string();
    let gw = f.add_agent_with_driver(
        "gw",
        "gateway,db",
        "",
        &[
            "--driver",
            "dir",
            "--driver-path",
            &tenants,
            "--public-address",
            "198.51.100.10",
            "--public-ports",
            "15000-15009",
        ],
    );
    let root = f.json(0, &["user", "create", "--name", "root", "--role", "platform_admin"]);
    let root_pw = root["initial_password"].as_str().expect("initial password").to_string();
    let b = Browser::start(f.tmp.path(), 1280, 900);
    let base = f.endpoint(0);

    // A platform admin's first sign-in enrols TOTP; the second needs a code.
    let secret =
        sign_in(&b, &base, "root", &root_pw, None, Some(&shot("totp-enrol"))).expect("the first sign-in enrols TOTP");
    sign_out(&b);
    // A code is good once: the second sign-in waits for the next 30 s step.
    let step = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() / 30;
    let enrolled = step();
    berqenas_tests::wait_for("the next TOTP step", std::time::Duration::from_secs(35), || {
        (step() > enrolled).then_some(())
    });
    sign_in(&b, &base, "root", &root_pw, Some(&secret), None);

    // The fleet: the gateway node, healthy, with its roles.
    b.goto(&format!("{base}/#/fleet"));
    b.wait_text("h1", "Fleet", WAIT);
    b.wait_text("td", "healthy", WAIT);
    b.wait_text("td", "gateway", WAIT);
    screenshot(&b, "fleet");

    // Create a tenant with the seed's fields; its database password is shown once.
    b.goto(&format!("{base}/#/tenants"));
    b.wait_text("h1", "Tenants", WAIT);
    b.click(&b.wait_text("summary", "Create a tenant", WAIT));
    field(&b, "name", "acme");
    field(&b, "db_quota", "5GB");
    press(&b, "Create tenant");
    b.wait_text("h2", "Tenant acme created", WAIT);
    b.wait_text("td a", "acme", WAIT);
    let created = f.json(0, &["tenant", "get", "acme"]);
    assert_eq!(created["db_quota_bytes"], 5_000_000_000u64, "{created}");
    screenshot(&b, "tenants");

    // Add a device: the browser makes its key pair; the QR code of its config loads.
    b.goto(&format!("{base}/#/t/acme/devices"));
    b.wait_text("h2", "VPN devices", WAIT);
    field(&b, "name", "laptop");
    press(&b, "Add device");
    b.wait("#device-config img.qr", WAIT);
    b.wait_until("the device's QR code to load", WAIT, || {
        let w = b.exec("return document.querySelector('#device-config img.qr').naturalWidth", vec![]);
        (w.as_u64()? > 0).then_some(())
    });
    let devices = f.json(0, &["device", "list", "--tenant", "acme"]);
    let laptop = devices.as_array().into_iter().flatten().find(|d| d["name"] == "laptop").expect("laptop added");
    let qr_url = b.exec("return document.querySelector('#device-config img.qr').getAttribute('src')", vec![]);
    let qr = fetch(&b, qr_url.as_str().expect("src"), &["content-type"]);
    assert_eq!(qr["headers"]["content-type"], "image/svg+xml", "{qr}");
    assert!(qr["body"].as_str().unwrap_or_default().starts_with("<?xml"), "{qr}");
    assert_eq!(laptop["public_key"].as_str().map(str::len), Some(44), "{laptop}");
    screenshot(&b, "device");

    // Expose a service of it, then switch it from public to VPN only.
    b.goto(&format!("{base}/#/t/acme/exposures"));
    b.wait_text("h2", "Exposures", WAIT);
    field(&b, "port", "5432");
    press(&b, "Expose");
    let switch = b.wait("button[role=switch][aria-checked=true]", WAIT);
    b.wait_text("td", "198.51.100.10:1500", WAIT);
    b.click(&switch);
    b.wait("button[role=switch][aria-checked=false]", WAIT);
    let x = f.json(0, &["expose", "list", "--tenant", "acme"]);
    assert_eq!(x[0]["enabled"], false, "switched to VPN only: {x}");
    screenshot(&b, "exposures");
    wait_gateway_exposures(&f, gw);

    // Other pages render for the admin (backups: no db node with PostgreSQL here).
    for (tab, heading) in
        [("", "Database"), ("/firewall", "Firewall rules"), ("/usage", "Usage"), ("/audit", "Audit log")]
    {
        b.goto(&format!("{base}/#/t/acme{tab}"));
        b.wait_text("h2", heading, WAIT);
    }
    press(&b, "Verify the chain");
    b.wait_text("p", "The chain is intact", WAIT);
    screenshot(&b, "audit");

    // A member of acme sees only acme, read only; globex's URL is the API's 403.
    f.json(0, &["tenant", "create", "--name", "globex"]);
    let bob = f.json(0, &["user", "create", "--name", "bob", "--role", "member", "--tenant", "acme"]);
    let bob_pw = bob["initial_password"].as_str().expect("initial password").to_string();
    sign_out(&b);
    sign_in(&b, &base, "bob", &bob_pw, None, None);
    b.wait_text("h1", "acme", WAIT);
    let nav = b.text(&b.wait("#nav", WAIT));
    assert!(!nav.contains("Fleet") && !nav.contains("Tenants"), "a member sees no fleet: {nav}");
    b.goto(&format!("{base}/#/t/acme/devices"));
    b.wait_text("td", "laptop", WAIT);
    assert!(b.find_all("main input[name=public_key]").is_empty(), "a member cannot add devices");
    b.goto(&format!("{base}/#/t/globex"));
    b.wait_text("h1.denied", "403", WAIT);
    assert!(!b.page_text().contains("globex\n"), "nothing of globex is shown");
    screenshot(&b, "forbidden");

    // Phone width: one column, every row readable.
    b.set_window(390, 844);
    b.goto(&format!("{base}/#/t/acme/devices"));
    b.wait_text("td", "laptop", WAIT);
    let overflow = b.exec("return document.documentElement.scrollWidth - window.innerWidth", vec![]);
    assert!(overflow.as_i64().unwrap_or(1) <= 0, "no sideways scrolling at phone width: {overflow}");
    screenshot(&b, "phone");
}

/// The gateway agent received the device and the exposure, now disabled.
fn wait_gateway_exposures(f: &Fleet, gw: usize) {
    berqenas_tests::wait_for("the gateway to hold the exposure disabled", WAIT, || {
        let file = f.agents[gw].tenant_file("acme")?;
        let g = &file["gateway"];
        let x = g["exposures"].as_array()?;
        (g["peers"].as_array()?.len() == 1 && x.len() == 1 && x[0]["enabled"] == false).then_some(())
    });
}

/// What the tenant sees of its `orders`: the row count and a digest of every row, in order.
const ROWS: &str =
    "SELECT count(*) || ' ' || coalesce(md5(string_agg(id || ':' || note, ',' ORDER BY id)), '') FROM orders";

#[test]
fn an_owner_backs_up_and_restores_its_database_in_the_browser() {
    let (env, _s3) = setup_configured(|_, db, tmp, cfg| {
        let s3 = S3::start_in(&db.netns, &db.addr.to_string(), tmp);
        cfg.backup = Some(s3.config());
        s3
    });
    let acme = env.create("acme", &["--vpn", "disabled", "--ddl", "enabled"]);
    let (user, pw) = (acme["db_user"].as_str().expect("user"), acme["db_password"].as_str().expect("password"));
    env.as_tenant(
        user,
        pw,
        &[
            "CREATE TABLE orders (id int PRIMARY KEY, note text)",
            "INSERT INTO orders SELECT g, 'as backed up ' || g FROM generate_series(1, 500) g",
        ],
    )
    .expect("acme fills its schema");
    let at_backup = env.as_tenant(user, pw, &[ROWS]).expect("rows");
    berqenas_tests::wait_for("acme's data key", Duration::from_secs(30), || {
        env.json(&["backup", "list", "--tenant", "acme"])["keyed"].as_bool().filter(|k| *k)
    });
    let owner = env.json(&["user", "create", "--name", "olga", "--role", "owner", "--tenant", "acme"]);
    let owner_pw = owner["initial_password"].as_str().expect("initial password").to_string();

    // The coordinator serves the panel inside the lab; the browser reaches it through a port here.
    let port = env.lab.forward(&env.c1, &env.c1.addr.to_string(), 7201);
    let base = format!("https://127.0.0.1:{port}");
    let b = Browser::start(env.tmp.path(), 1280, 900);
    sign_in(&b, &base, "olga", &owner_pw, None, None);
    b.wait_text("h1", "acme", WAIT);
    b.goto(&format!("{base}/#/t/acme/backups"));
    b.wait_text("h2", "Backups", WAIT);

    // Back up now: the page follows the run until the backup is listed.
    let before: Vec<u64> = taken(&env);
    press(&b, "Back up now");
    let made = berqenas_tests::wait_for("the backup asked for", Duration::from_secs(120), || {
        taken(&env).into_iter().find(|t| !before.contains(t))
    });
    let listed = env.json(&["backup", "list", "--tenant", "acme"]);
    let entry = listed["backups"].as_array().into_iter().flatten().find(|e| e["taken_ms"] == made).expect("entry");
    b.wait_text("td", entry["taken_at"].as_str().expect("taken_at"), Duration::from_secs(30));
    b.wait_text("#last-run", "ok", Duration::from_secs(30));

    // The tenant changes its rows after the backup.
    env.as_tenant(
        user,
        pw,
        &[
            "UPDATE orders SET note = 'changed' WHERE id <= 100",
            "DELETE FROM orders WHERE id > 400",
            "INSERT INTO orders VALUES (1000, 'new after the backup')",
        ],
    )
    .expect("changes");
    assert_ne!(env.as_tenant(user, pw, &[ROWS]).expect("rows"), at_backup);

    // Restore over the live data at the backup's time (the form takes whole seconds: the next one).
    let at_ms = (made / 1000 + 1) * 1000;
    b.exec(
        "const [ms] = arguments;
         const set = (el, value) => {
           el.value = value;
           el.dispatchEvent(new Event('input', {bubbles: true}));
           el.dispatchEvent(new Event('change', {bubbles: true}));
         };
         set(document.querySelector('main input[name=at]'),
             new Date(ms - new Date(ms).getTimezoneOffset() * 60000).toISOString().slice(0, 19));
         set(document.querySelector('main select[name=mode]'), 'overwrite');",
        vec![json!(at_ms)],
    );
    press(&b, "Restore");
    let asked = b.wait_text("#confirm-text", "Overwrite acme", WAIT);
    assert!(b.text(&asked).contains("live data"), "the confirmation says what is overwritten");
    b.click(&b.wait("#confirm-ok", WAIT));
    b.wait_text("#last-restore", "made tenant_acme", Duration::from_secs(180));
    let restored = env.json(&["backup", "list", "--tenant", "acme"]);
    assert_eq!(restored["last_restore"]["ok"], true, "{restored}");
    screenshot(&b, "backups");

    // What the tenant reads is again what it had at the backup.
    let rows = berqenas_tests::wait_for("the tenant to read its restored rows", Duration::from_secs(30), || {
        env.as_tenant(user, pw, &[ROWS]).ok().filter(|r| *r == at_backup)
    });
    assert_eq!(rows, at_backup);

    // The owner changes its password on its Account page (behind its name); the new one signs in.
    b.click(&b.wait("#who a[href='#/account']", WAIT));
    b.wait_text("h2", "Change your password", WAIT);
    let fresh = "restored and renewed 2 times";
    field(&b, "current_password", "not the password");
    field(&b, "new_password", fresh);
    field(&b, "confirm_password", fresh);
    press(&b, "Change password");
    b.wait_text("main p.error", "current password is wrong", WAIT);
    b.goto(&format!("{base}/#/account"));
    field(&b, "current_password", &owner_pw);
    field(&b, "new_password", fresh);
    field(&b, "confirm_password", fresh);
    press(&b, "Change password");
    b.wait_text("main p.ok-text", "Password changed", WAIT);
    sign_out(&b);
    sign_in(&b, &base, "olga", fresh, None, None);
    b.wait_text("h1", "acme", WAIT);
}

/// When acme's listed backups were taken.
fn taken(env: &crate::db::Env) -> Vec<u64> {
    let v = env.json(&["backup", "list", "--tenant", "acme"]);
    v["backups"].as_array().into_iter().flatten().filter_map(|e| e["taken_ms"].as_u64()).collect()
}
