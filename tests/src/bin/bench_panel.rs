//! `deploy/bench.sh panel`: one release coordinator (API over TLS on loopback) with 1,000 tenants,
//! and the panel's tenant list in headless Chromium: time to first byte of the page, time until
//! the list is painted (from the navigation's start, by the Element Timing API: its first page of
//! 50 rows, with the pager counting all 1,000, so every tenant was loaded), and the bytes — the
//! page and its assets apart (their size on the wire, from the network or the cache), the tenant
//! list's JSON apart. The first load (cache emptied) and the median of five more (assets cached,
//! as they are meant to be: the browser trusts the cluster CA), each opened from another site
//! (about:blank: Chromium starts a new renderer process for it); then the median of five reloads
//! of the panel in its tab. One JSON line; each kind's waterfall (requests, the panel's marks,
//! first paints, frames over 50 ms) on stderr. `BERQENAS_BENCH_CHROMIUM_ARGS` adds browser flags
//! (space-separated), e.g. `--trace-startup=blink,cc,viz --trace-startup-format=json
//! --trace-startup-file=/tmp/trace.json` for a trace of where the time goes.
//! Usage: bench-panel PATH/TO/berqenas-coordinator

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "benchmark driver: a failed setup step is a failed run"
)]

use berqenas_tests::bench::{percentile, round2};
use berqenas_tests::coordinator::{self, Listen};
use berqenas_tests::panel::sign_in;
use berqenas_tests::webdriver::Browser;
use berqenas_tests::{run, wait_for, Proc};
use serde_json::{json, Value};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

const TENANTS: usize = 1000;

/// The base64 SHA-256 of the public key of the certificate in `pem`, as Chromium's
/// `--ignore-certificate-errors-spki-list` takes it.
fn spki_sha256(pem: &std::path::Path) -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", "openssl x509 -pubkey -noout -in \"$1\" | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64", "sh"])
        .arg(pem)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("base64").trim().to_string()
}

fn main() {
    let bin = PathBuf::from(std::env::args().nth(1).expect("usage: bench-panel PATH/TO/berqenas-coordinator"));
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("c1");
    let listen = Listen::loopback();
    // 1,000 tenants need more than the 512 tenant subnets of the tests' 198.18.0.0/15; no packet is
    // sent to the pool here (as in bench-coordinator).
    let key = coordinator::init(&bin, &dir, &listen, "100.64.0.0/10");
    let mut args = coordinator::serve_args(&dir, 1, &listen);
    args.extend(["--api-tls", "on", "--admin-key-rate", "0"].map(str::to_string));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _c = Proc::spawn("coordinator", &bin, &args, tmp.path());
    let port = Listen::port(&listen.api);
    wait_for("the API", Duration::from_secs(20), || TcpStream::connect(("127.0.0.1", port)).ok());
    let base = format!("https://127.0.0.1:{port}");
    let ca = dir.join("ca.pem");
    let env = [
        ("BERQENAS_ENDPOINT", base.as_str()),
        ("BERQENAS_API_KEY", key.as_str()),
        ("BERQENAS_CA_CERT", ca.to_str().expect("utf-8")),
    ];

    // 1,000 tenants through the REST API, 16 at a time (no VPN: the pool holds 512 subnets).
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let pem = std::fs::read(&ca).expect("ca.pem");
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA"))
            .build()
            .expect("client");
        let names: Vec<String> = (0..TENANTS).map(|i| format!("t{i:04}")).collect();
        for chunk in names.chunks(16) {
            let calls: Vec<_> = chunk
                .iter()
                .map(|n| {
                    let call = client
                        .post(format!("{base}/api/v1/tenant"))
                        .bearer_auth(&key)
                        .json(&json!({"name": n, "vpn_enabled": false}));
                    tokio::spawn(call.send())
                })
                .collect();
            for call in calls {
                let r = call.await.expect("task").expect("create");
                let status = r.status();
                assert!(status.is_success(), "create: {status}: {}", r.text().await.unwrap_or_default());
            }
        }
    });
    let out = run(&bin, &["user", "create", "--name", "bench", "--role", "platform_admin", "--output", "json"], &env);
    assert!(out.status.success(), "user create: {}", String::from_utf8_lossy(&out.stderr));
    let user: Value = serde_json::from_slice(&out.stdout).expect("json");
    let password = user["initial_password"].as_str().expect("initial password");

    // The browser trusts the cluster CA, as an operator's does once it is imported (or with a
    // certificate from a public CA): with a certificate error Chromium caches nothing, and the
    // warm loads would fetch every asset again.
    let mut extra = vec![format!("--ignore-certificate-errors-spki-list={}", spki_sha256(&ca))];
    let flags = std::env::var("BERQENAS_BENCH_CHROMIUM_ARGS").unwrap_or_default();
    extra.extend(flags.split_whitespace().map(str::to_string));
    let b = Browser::start_with(tmp.path(), 1280, 900, &extra);
    sign_in(&b, &base, "bench", password, None, None);
    // `reload`: the panel reloaded in its tab (same site, same renderer process); otherwise
    // opened from another site (about:blank), which Chromium gives a new renderer process.
    let measure = |reload: bool| -> Value {
        if reload {
            b.refresh();
        } else {
            b.goto("about:blank");
            b.goto(&format!("{base}/#/tenants"));
        }
        b.exec(
            "const n = arguments[0];
             return new Promise((done) => {
               const check = () => {
                 const pager = document.querySelector('main .pager span');
                 if (document.querySelectorAll('main tbody tr').length >= Math.min(n, 50)
                     && (n <= 50 || (pager && pager.textContent.endsWith(`of ${n}`)))) {
                   // When the list was painted: the Element Timing entry of its count line,
                   // drawn in the same frame as the rows (tenants.js marks it).
                   new PerformanceObserver((entries, observer) => {
                     const painted = entries.getEntries().find((e) => e.identifier === 'tenant-list');
                     if (!painted) return;
                     observer.disconnect();
                     report(painted.renderTime || painted.loadTime);
                   }).observe({ type: 'element', buffered: true });
                 } else requestAnimationFrame(check);
               };
               // Frames over 50 ms (long animation frames: start, render start, style and
               // layout start, end) and the first paints, for the waterfall.
               const frames = [];
               new PerformanceObserver((l) => frames.push(...l.getEntries().map((f) => ['frame', Math.round(f.startTime), Math.round(f.renderStart), Math.round(f.styleAndLayoutStart), Math.round(f.startTime + f.duration), f.scripts.map((x) => [x.invoker, x.invokerType, Math.round(x.startTime), Math.round(x.duration), Math.round(x.pauseDuration), Math.round(x.forcedStyleAndLayoutDuration)])])))
                 .observe({ type: 'long-animation-frame', buffered: true });
               const report = (shown) => setTimeout(() => {
                   const nav = performance.getEntriesByType('navigation')[0];
                   const res = performance.getEntriesByType('resource');
                   const api = res.filter((r) => new URL(r.name).pathname.startsWith('/api/'));
                   const page = res.filter((r) => !new URL(r.name).pathname.startsWith('/api/'));
                   const sum = (l) => l.reduce((s, r) => s + r.encodedBodySize, 0);
                   done({ttfb_ms: nav.responseStart - nav.startTime, shown_ms: shown,
                         page_bytes: nav.encodedBodySize + sum(page), api_bytes: sum(api),
                         list_fetched_ms: Math.max(...api.filter((r) => new URL(r.name).pathname.startsWith('/api/v1/tenants')).map((r) => r.responseEnd)),
                         waterfall: [['page', nav.nextHopProtocol, Math.round(nav.connectStart), Math.round(nav.requestStart), Math.round(nav.responseStart), Math.round(nav.responseEnd), Math.round(nav.domInteractive), Math.round(nav.domContentLoadedEventEnd)]].concat(res.map((r) => [new URL(r.name).pathname.split('/').pop(), r.nextHopProtocol, Math.round(r.startTime), Math.round(r.connectStart), Math.round(r.connectEnd), Math.round(r.requestStart), Math.round(r.responseStart), Math.round(r.responseEnd)])).concat(performance.getEntriesByType('mark').map((m) => [m.name, Math.round(m.startTime)])).concat(performance.getEntriesByType('paint').map((m) => [m.name, Math.round(m.startTime)])).concat(frames)});
               }, 100);
               check();
             });",
            vec![json!(TENANTS)],
        )
    };
    b.clear_cache();
    let cold = measure(false);
    // The cold load's requests (path, start, first byte, end; ms from the navigation), on stderr.
    eprintln!("cold waterfall: {}", cold["waterfall"]);
    let warm: Vec<Value> = (0..5).map(|_| measure(false)).collect();
    eprintln!("warm waterfall: {}", warm[2]["waterfall"]);
    let reloads: Vec<Value> = (0..5).map(|_| measure(true)).collect();
    eprintln!("reload waterfall: {}", reloads[2]["waterfall"]);
    let median = |runs: &[Value], k: &str| {
        let mut v: Vec<f64> = runs.iter().map(|m| m[k].as_f64().unwrap_or(f64::NAN)).collect();
        v.sort_by(f64::total_cmp);
        round2(percentile(&v, 50.0))
    };
    let summary = |runs: &[Value]| {
        json!({"ttfb_ms": median(runs, "ttfb_ms"), "tenant_list_shown_ms": median(runs, "shown_ms"),
               "tenant_list_fetched_ms": median(runs, "list_fetched_ms"),
               "page_bytes": median(runs, "page_bytes"), "tenant_list_json_bytes": median(runs, "api_bytes")})
    };
    let line = json!({
        "bench": "panel",
        "tenants": TENANTS,
        "cold": {"ttfb_ms": round2(cold["ttfb_ms"].as_f64().unwrap_or(f64::NAN)),
                 "tenant_list_shown_ms": round2(cold["shown_ms"].as_f64().unwrap_or(f64::NAN)),
                 "tenant_list_fetched_ms": round2(cold["list_fetched_ms"].as_f64().unwrap_or(f64::NAN)),
                 "page_bytes": cold["page_bytes"], "tenant_list_json_bytes": cold["api_bytes"]},
        "warm_median": summary(&warm),
        "reload_median": summary(&reloads),
        "targets": {"ttfb_and_list_ms": 200, "page_bytes": 100 * 1024},
    });
    println!("{line}");
}
