//! A lean WebDriver client for the panel's browser tests: headless Chromium driven through
//! Debian's `chromedriver` (W3C protocol, JSON over plain HTTP on loopback, one connection per
//! command). Missing `chromium` or `chromedriver` fails loudly; the lab CA's certificates are
//! accepted (`acceptInsecureCerts`), nothing else about the browser is relaxed.

use crate::Proc;
use base64::Engine as _;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_program(names: &[&str]) -> PathBuf {
    for name in names {
        // Debian's /usr/bin/chromium is a shell wrapper; the browser itself is under /usr/lib.
        for dir in ["/usr/lib/chromium", "/usr/bin", "/usr/local/bin"] {
            let p = Path::new(dir).join(name);
            if p.exists() {
                return p;
            }
        }
    }
    panic!("{} is missing: install Debian's chromium and chromium-driver (deploy/test.sh does)", names.join(" or "))
}

/// An element found on the page.
#[derive(Debug, Clone)]
pub struct Element(pub String);

/// One headless browser with its chromedriver; both end on drop.
pub struct Browser {
    port: u16,
    session: String,
    _driver: Proc,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium at `width`×`height`; logs go to `log_dir`.
    pub fn start(log_dir: &Path, width: u32, height: u32) -> Self {
        Self::start_with(log_dir, width, height, &[])
    }

    /// `start` with extra Chromium flags.
    pub fn start_with(log_dir: &Path, width: u32, height: u32, extra: &[String]) -> Self {
        let driver_bin = find_program(&["chromedriver"]);
        let chromium = find_program(&["chromium"]);
        let port = crate::free_port();
        let driver = Proc::spawn("chromedriver", &driver_bin, &[&format!("--port={port}")], log_dir);
        crate::wait_for("chromedriver", Duration::from_secs(20), || TcpStream::connect(("127.0.0.1", port)).ok());
        let profile = tempfile::tempdir().expect("browser profile dir");
        let mut b = Self { port, session: String::new(), _driver: driver, _profile: profile };
        let args: Vec<String> = [
            "--headless=new".to_string(),
            "--no-sandbox".into(), // tests run as root
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--no-first-run".into(),
            "--disable-extensions".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--hide-scrollbars".into(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", b._profile.path().display()),
        ]
        .into_iter()
        .chain(extra.iter().cloned())
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let v = b.call("POST", "/session", Some(caps)).unwrap_or_else(|e| panic!("start a browser session: {e}"));
        b.session = v["sessionId"].as_str().expect("a session id").to_string();
        b
    }

    /// One WebDriver command; the answer's `value`, or the driver's error text.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| format!("connect chromedriver: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(120))).map_err(|e| e.to_string())?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        );
        s.write_all(head.as_bytes()).and_then(|_| s.write_all(body.as_bytes())).map_err(|e| e.to_string())?;
        // chromedriver may keep the connection open: read the head, then Content-Length bytes.
        let mut raw = Vec::new();
        let mut buf = [0u8; 65536];
        let body = loop {
            let n = s.read(&mut buf).map_err(|e| format!("read chromedriver's answer: {e}"))?;
            raw.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&raw).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let lower = head.to_ascii_lowercase();
                let length = lower
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                let have = raw.len() - head.len() - 4;
                match length {
                    Some(len) if have >= len => {
                        break String::from_utf8_lossy(&raw[head.len() + 4..head.len() + 4 + len]).into_owned()
                    }
                    None if lower.contains("transfer-encoding: chunked") && body.ends_with("0\r\n\r\n") => {
                        break dechunk(body)
                    }
                    _ => {}
                }
            }
            if n == 0 {
                let text = String::from_utf8_lossy(&raw).into_owned();
                break text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
            }
        };
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        let value = v.get("value").cloned().unwrap_or(Value::Null);
        if let Some(err) = value.get("error").and_then(Value::as_str) {
            return Err(format!("{err}: {}", value["message"].as_str().unwrap_or_default()));
        }
        Ok(value)
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let full = format!("/session/{}{path}", self.session);
        self.call(method, &full, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Empties the browser's HTTP cache (a Chrome DevTools command through chromedriver).
    pub fn clear_cache(&self) {
        self.cmd("POST", "/goog/cdp/execute", Some(json!({"cmd": "Network.clearBrowserCache", "params": {}})));
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url})));
    }

    /// Reloads the current page (WebDriver's Refresh: waits for the new document to load).
    pub fn refresh(&self) {
        self.cmd("POST", "/refresh", Some(json!({})));
    }

    pub fn url(&self) -> String {
        self.cmd("GET", "/url", None).as_str().unwrap_or_default().to_string()
    }

    pub fn find_all(&self, css: &str) -> Vec<Element> {
        let v = self.cmd("POST", "/elements", Some(json!({"using": "css selector", "value": css})));
        v.as_array().into_iter().flatten().filter_map(|e| e[ELEMENT].as_str()).map(|id| Element(id.into())).collect()
    }

    /// The first shown element matching `css` whose text contains `needle` (any text when empty).
    fn shown(&self, css: &str, needle: &str) -> Option<Element> {
        let v = self
            .call(
                "POST",
                &format!("/session/{}/execute/sync", self.session),
                Some(json!({"script": "const [css, needle] = arguments;
                    return [...document.querySelectorAll(css)].find((e) => e.getClientRects().length > 0
                        && (!needle || (e.innerText || e.textContent || '').includes(needle))) || null;",
                    "args": [css, needle]})),
            )
            .ok()?;
        v.get(ELEMENT).and_then(Value::as_str).map(|id| Element(id.to_string()))
    }

    /// The first element matching `css` that the page shows, within `timeout`.
    pub fn wait(&self, css: &str, timeout: Duration) -> Element {
        self.wait_until(&format!("{css} to show"), timeout, || self.shown(css, ""))
    }

    /// The first shown element matching `css` whose text contains `needle`.
    pub fn wait_text(&self, css: &str, needle: &str, timeout: Duration) -> Element {
        self.wait_until(&format!("{css} showing {needle:?}"), timeout, || self.shown(css, needle))
    }

    /// Polls `f` until it gives a value; on timeout the page's text is in the panic.
    pub fn wait_until<T>(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            if start.elapsed() > timeout {
                panic!("timed out after {timeout:?} waiting for {what}; at {}:\n{}", self.url(), self.page_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn displayed(&self, e: &Element) -> bool {
        let path = format!("/session/{}/execute/sync", self.session);
        let script = "return arguments[0].getClientRects().length > 0";
        let v = self.call("POST", &path, Some(json!({"script": script, "args": [{ELEMENT: e.0}]})));
        v.ok().and_then(|v| v.as_bool()).unwrap_or(false)
    }

    pub fn click(&self, e: &Element) {
        self.cmd("POST", &format!("/element/{}/click", e.0), Some(json!({})));
    }

    /// Clears the field and types `text`.
    pub fn type_into(&self, e: &Element, text: &str) {
        self.cmd("POST", &format!("/element/{}/clear", e.0), Some(json!({})));
        self.cmd("POST", &format!("/element/{}/value", e.0), Some(json!({"text": text})));
    }

    pub fn text(&self, e: &Element) -> String {
        let path = format!("/session/{}/execute/sync", self.session);
        let script = "return arguments[0].innerText";
        let v = self.call("POST", &path, Some(json!({"script": script, "args": [{ELEMENT: e.0}]})));
        v.ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
    }

    pub fn attr(&self, e: &Element, name: &str) -> Option<String> {
        self.cmd("GET", &format!("/element/{}/property/{name}", e.0), None).as_str().map(str::to_string)
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub fn exec(&self, script: &str, args: Vec<Value>) -> Value {
        self.cmd("POST", "/execute/sync", Some(json!({"script": script, "args": args})))
    }

    /// Everything the page shows as text.
    pub fn page_text(&self) -> String {
        let path = format!("/session/{}/execute/sync", self.session);
        let v = self.call(
            "POST",
            &path,
            Some(json!({"script": "return document.body ? document.body.innerText : ''", "args": []})),
        );
        v.ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
    }

    pub fn set_window(&self, width: u32, height: u32) {
        self.cmd("POST", "/window/rect", Some(json!({"width": width, "height": height})));
    }

    /// Saves a PNG of the viewport to `path`.
    pub fn screenshot(&self, path: &Path) {
        let v = self.cmd("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or_default()).expect("PNG base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Messages the page logged (errors included; CSP violations show here).
    pub fn console(&self) -> Vec<String> {
        let path = format!("/session/{}/se/log", self.session);
        let v = self.call("POST", &path, Some(json!({"type": "browser"}))).unwrap_or(Value::Null);
        v.as_array().into_iter().flatten().filter_map(|e| e["message"].as_str().map(str::to_string)).collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// The current TOTP code (RFC 6238: SHA-1, 6 digits, 30 s) of a base32 secret.
pub fn totp(secret_base32: &str, unix_seconds: u64) -> String {
    let key = base32(secret_base32);
    let counter = (unix_seconds / 30).to_be_bytes();
    let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &key), &counter);
    let h = tag.as_ref();
    let off = usize::from(h[h.len() - 1] & 0x0f);
    let bin = u32::from_be_bytes([h[off] & 0x7f, h[off + 1], h[off + 2], h[off + 3]]);
    format!("{:06}", bin % 1_000_000)
}

fn base32(s: &str) -> Vec<u8> {
    let (mut bits, mut acc, mut out) = (0u32, 0u32, Vec::new());
    for c in s.chars().filter(|c| !c.is_whitespace() && *c != '=') {
        let v = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".find(c.to_ascii_uppercase()).expect("a base32 secret");
        acc = (acc << 5) | u32::try_from(v).expect("below 32");
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).expect("masked to a byte"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn totp_matches_rfc_6238() {
        // RFC 6238 appendix B, SHA-1, secret "12345678901234567890" (base32 below), 6 digits.
        let secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
        assert_eq!(super::totp(secret, 59), "287082");
        assert_eq!(super::totp(secret, 1_111_111_109), "081804");
    }
}
