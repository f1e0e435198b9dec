//! The panel's sign-in as a user does it in the browser (shared by the browser tests and
//! `deploy/bench.sh panel`): username and password, the TOTP code computed from the secret the
//! enrolment page shows (or the one given; the page shows it as a QR code too), then the
//! signed-in shell.

use crate::webdriver::Browser;
use std::path::Path;
use std::time::Duration;

/// How long a page step may take.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn field(b: &Browser, name: &str, text: &str) {
    let e = b.wait(&format!("main input[name={name}]"), WAIT);
    b.type_into(&e, text);
}

pub fn press(b: &Browser, label: &str) {
    let e = b.wait_text("main button", label, WAIT);
    b.click(&e);
}

/// Signs in through the sign-in page; a first sign-in without TOTP enrols with a code computed
/// from the secret the page shows. Returns the secret when it enrolled.
pub fn sign_in(
    b: &Browser,
    base: &str,
    user: &str,
    password: &str,
    totp: Option<&str>,
    enrol_shot: Option<&Path>,
) -> Option<String> {
    b.goto(&format!("{base}/#/signin"));
    b.wait_text("h1", "Sign in", WAIT);
    field(b, "username", user);
    field(b, "password", password);
    press(b, "Sign in");
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let state = b.wait_until("signed in, a TOTP field or enrolment", WAIT, || {
        if !b.find_all("#totp-secret").is_empty() {
            return Some("enrol");
        }
        if b.find_all("main input[name=totp]").iter().any(|e| b.displayed(e)) {
            return Some("totp");
        }
        (!b.find_all("#who button").is_empty()).then_some("in")
    });
    match state {
        "enrol" => {
            let shown = b.text(&b.wait("#totp-secret", WAIT)).replace(' ', "");
            assert_enrol_qr(b, &shown);
            if let Some(path) = enrol_shot {
                b.screenshot(path);
            }
            field(b, "code", &crate::webdriver::totp(&shown, now()));
            press(b, "Confirm");
            b.wait("#who button", WAIT);
            Some(shown)
        }
        "totp" => {
            let secret = totp.expect("a TOTP secret for this user");
            field(b, "totp", &crate::webdriver::totp(secret, now()));
            press(b, "Sign in");
            b.wait("#who button", WAIT);
            None
        }
        _ => None,
    }
}

/// The enrolment page shows the secret as a QR code: an inline SVG image that loads, beside a
/// link with the `otpauth://` URI of the same secret.
pub fn assert_enrol_qr(b: &Browser, secret: &str) {
    let qr = b.wait("main img.qr", WAIT);
    let src = b.attr(&qr, "src").unwrap_or_default();
    assert!(src.starts_with("data:image/svg+xml;base64,"), "the QR code is inline: {}", &src[..src.len().min(60)]);
    b.wait_until("the TOTP QR code to load", WAIT, || {
        (b.exec("return document.querySelector('main img.qr').naturalWidth", vec![]).as_u64()? > 0).then_some(())
    });
    let link = b.wait("main a[href^='otpauth://totp/']", WAIT);
    let uri = b.attr(&link, "href").unwrap_or_default();
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");
}

pub fn sign_out(b: &Browser) {
    let e = b.wait_text("#who button", "Sign out", WAIT);
    b.click(&e);
    b.wait_text("h1", "Sign in", WAIT);
}
