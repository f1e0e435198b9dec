//! The web panel, served by the coordinator itself on the API listener: `/` (the one HTML page,
//! branded on the server so no other name flashes), `/assets/{version}/{file}` (the embedded
//! JavaScript modules, CSS, the branding stylesheet and logo), `GET /api/v1/branding`, and the
//! security headers every answer of this listener carries (`headers`). Assets are compiled into
//! the binary (`include_bytes!`): nothing is fetched from elsewhere, no Node at build or run time.
//! Their URL holds a hash of every asset and of the branding, so they are cached for a year and a
//! new binary or branding is a new URL; the page itself is never cached.

use super::dto::BrandingView;
use crate::branding::Branding;
use crate::server::Coordinator;
use axum::extract::{Path, Request};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            bytes: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/panel/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// The panel's files (`coordinator/panel/`), besides `index.html`.
const ASSETS: &[Asset] = &[
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("ui.js", JS),
    asset!("signin.js", JS),
    asset!("fleet.js", JS),
    asset!("tenants.js", JS),
    asset!("tenant.js", JS),
    asset!("tenant-net.js", JS),
    asset!("tenant-ops.js", JS),
    asset!("account.js", JS),
    asset!("favicon.svg", "image/svg+xml"),
];

const INDEX: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/panel/index.html"));

/// The page's one inline script (`{{boot}}` in `INDEX`): it starts the session and the first
/// page's data before any module has loaded. The policy allows it by its hash, nothing else inline.
const BOOT: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/panel/boot.js"));

/// The Content-Security-Policy of every answer: only this origin's scripts and styles, and the one
/// inline script whose hash it names; no inline style, no plugins, no framing, forms only here.
static CSP: std::sync::LazyLock<HeaderValue> = std::sync::LazyLock::new(|| {
    use base64::Engine as _;
    let boot = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(BOOT.as_bytes()));
    let policy = format!(
        "default-src 'self'; script-src 'self' 'sha256-{boot}'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    );
    HeaderValue::from_str(&policy).unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'"))
});

/// What every answer of the API listener carries besides `CSP`: no sniffing, no framing, no
/// referrer leaving the panel.
const SECURITY_HEADERS: [(&str, &str); 4] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
];

/// The panel as this coordinator serves it: the branded page and the versioned assets.
pub struct Panel {
    pub branding: Branding,
    /// Hash of every asset and the branding: the `{version}` of asset URLs.
    pub version: String,
    index: String,
    brand_css: String,
}

fn escape_html(s: &str) -> String {
    s.chars().fold(String::with_capacity(s.len()), |mut out, c| {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
        out
    })
}

impl Panel {
    pub fn new(branding: Branding) -> Self {
        let brand_css = format!(":root{{--primary:{};--accent:{}}}\n", branding.primary_color, branding.accent_color);
        let mut hash = Sha256::new();
        for a in ASSETS {
            hash.update(a.name.as_bytes());
            hash.update(a.bytes);
        }
        hash.update(INDEX.as_bytes());
        hash.update(BOOT.as_bytes());
        hash.update(brand_css.as_bytes());
        hash.update(branding.product_name.as_bytes());
        if let Some(logo) = &branding.logo {
            hash.update(&logo.bytes);
        }
        let version = hex::encode(&hash.finalize()[..6]);
        let assets = format!("/assets/{version}");
        let logo = match &branding.logo {
            Some(l) => format!(
                "<img class=\"logo\" src=\"{assets}/logo.{}\" alt=\"\" width=\"32\" height=\"32\">",
                l.extension
            ),
            None => format!("<img class=\"logo\" src=\"{assets}/favicon.svg\" alt=\"\" width=\"32\" height=\"32\">"),
        };
        let support = match &branding.support_url {
            Some(url) => format!("<a href=\"{}\" rel=\"noopener\">Support</a>", escape_html(url)),
            None => String::new(),
        };
        let index = INDEX
            .replace("{{boot}}", BOOT)
            .replace("{{assets}}", &assets)
            .replace("{{product}}", &escape_html(&branding.product_name))
            .replace("{{logo}}", &logo)
            .replace("{{support}}", &support);
        Self { branding, version, index, brand_css }
    }

    pub fn view(&self) -> BrandingView {
        let b = &self.branding;
        BrandingView {
            product_name: b.product_name.clone(),
            logo_url: b.logo.as_ref().map(|l| format!("/assets/{}/logo.{}", self.version, l.extension)),
            primary_color: b.primary_color.to_string(),
            accent_color: b.accent_color.to_string(),
            support_url: b.support_url.clone(),
        }
    }
}

/// The panel of coordinator `c` (its `--branding`, else the default look).
pub fn panel(c: &Coordinator) -> Arc<Panel> {
    Arc::new(Panel::new(c.branding.get().cloned().unwrap_or_default()))
}

/// Adds `CSP` and `SECURITY_HEADERS` to every answer.
pub(super) async fn headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, CSP.clone());
    for (name, value) in SECURITY_HEADERS {
        h.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    res
}

fn cached(content_type: &'static str, immutable: bool, body: Vec<u8>) -> Response {
    let cache = if immutable { "public, max-age=31536000, immutable" } else { "no-cache" };
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, cache)], body).into_response()
}

/// `GET /`: the page.
pub(super) async fn index(Extension(panel): Extension<Arc<Panel>>) -> Response {
    cached("text/html; charset=utf-8", false, panel.index.clone().into_bytes())
}

/// `GET /assets/{version}/{file}`. An older version's URL still gets today's file, uncached.
pub(super) async fn asset(
    Extension(panel): Extension<Arc<Panel>>,
    Path((version, file)): Path<(String, String)>,
) -> Response {
    let current = version == panel.version;
    if file == "brand.css" {
        return cached("text/css; charset=utf-8", current, panel.brand_css.clone().into_bytes());
    }
    if let Some(logo) = panel.branding.logo.as_ref().filter(|l| file == format!("logo.{}", l.extension)) {
        return cached(logo.content_type, current, logo.bytes.clone());
    }
    match ASSETS.iter().find(|a| a.name == file) {
        Some(a) => cached(a.content_type, current, a.bytes.to_vec()),
        None => (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain")], "not found").into_response(),
    }
}

#[utoipa::path(get, path = "/api/v1/branding",
    responses((status = 200, description = "the panel's product name, logo, colours and support link", body = BrandingView)))]
pub(super) async fn branding(Extension(panel): Extension<Arc<Panel>>) -> Json<BrandingView> {
    Json(panel.view())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_branded_page_names_only_the_brand() {
        let b = Branding { product_name: "Acme <Cloud>".into(), ..Branding::default() };
        let p = Panel::new(b);
        assert!(!p.index.contains("Berqenas"), "{}", p.index);
        assert!(p.index.contains("Acme &lt;Cloud&gt;"));
        assert!(!p.index.contains("{{"), "every placeholder filled");
        for a in ASSETS {
            let text = String::from_utf8_lossy(a.bytes);
            assert!(!text.contains("Berqenas"), "{} names no product", a.name);
        }
    }

    #[test]
    fn the_only_inline_script_is_the_boot_script_the_policy_names_by_hash() {
        use base64::Engine as _;
        let p = Panel::new(Branding::default());
        let inline: Vec<&str> = p
            .index
            .split("<script")
            .skip(1)
            .filter(|s| !s.starts_with(" type=\"module\" src="))
            .filter_map(|s| s.split_once('>').and_then(|(_, rest)| rest.split("</script>").next()))
            .collect();
        assert_eq!(inline, [BOOT], "one inline script, the boot script, byte for byte");
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(BOOT.as_bytes()));
        let csp = CSP.to_str().expect("ascii");
        assert!(csp.contains(&format!("script-src 'self' 'sha256-{hash}'")), "{csp}");
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
        assert!(!p.index.contains("style="), "no inline style");
        assert!(!p.index.contains("<style"), "no style element");
    }

    #[test]
    fn another_branding_is_another_version() {
        let a = Panel::new(Branding::default());
        let b = Panel::new(Branding { product_name: "Acme".into(), ..Branding::default() });
        assert_ne!(a.version, b.version);
    }

    #[test]
    fn the_first_page_is_small() {
        let total: usize = INDEX.len()
            + BOOT.len()
            + ASSETS
                .iter()
                .filter(|a| ["app.css", "app.js", "api.js", "ui.js", "signin.js"].contains(&a.name))
                .map(|a| a.bytes.len())
                .sum::<usize>();
        assert!(total < 100 * 1024, "first page {total} bytes");
    }
}
