//! Panel users and sessions against the real coordinator binary: users made with the CLI, signed
//! in over HTTP with reqwest as a browser would (cookie and CSRF header by hand), a platform
//! admin's TOTP enrolment at first sign-in, replayed codes, lockout, a disabled user's cookie,
//! CSRF, tenant roles and tenant isolation, and no password or secret in the audit trail or log.

use crate::harness::Cluster;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A browser's view of one user: its cookie and CSRF token once signed in.
struct Browser {
    base: String,
    http: reqwest::Client,
    cookie: Option<String>,
    csrf: Option<String>,
}

/// The `berqenas_session` cookie's value and attributes from a `Set-Cookie` header.
fn set_cookie(headers: &reqwest::header::HeaderMap) -> Option<(String, String)> {
    let header = headers.get(reqwest::header::SET_COOKIE)?.to_str().ok()?.to_string();
    let value = header.split(';').next()?.strip_prefix("berqenas_session=")?.to_string();
    Some((value, header))
}

fn assert_cookie_flags(header: &str) {
    let attrs: Vec<&str> = header.split(';').map(str::trim).collect();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(attrs.contains(&flag), "cookie has {flag}: {header}");
    }
}

impl Browser {
    fn new(c: &Cluster) -> Self {
        Self { base: c.nodes[0].endpoint(), http: reqwest::Client::new(), cookie: None, csrf: None }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        csrf: bool,
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header(reqwest::header::COOKIE, format!("berqenas_session={c}"));
        }
        if let (true, Some(t)) = (csrf, &self.csrf) {
            req = req.header("X-CSRF-Token", t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, value, headers)
    }

    /// Signs in; on a signed-in answer keeps the cookie and CSRF token.
    async fn sign_in(&mut self, user: &str, password: &str, totp: Option<&str>) -> (StatusCode, Value) {
        let mut body = json!({"username": user, "password": password});
        if let Some(code) = totp {
            body["totp"] = json!(code);
        }
        let (status, value, resp) = self.call(Method::POST, "/api/v1/session", Some(body), false).await;
        if let Some((cookie, header)) = set_cookie(&resp) {
            assert_cookie_flags(&header);
            self.cookie = Some(cookie);
            self.csrf = value["csrf_token"].as_str().map(str::to_string);
        }
        (status, value)
    }
}

fn create_user(c: &Cluster, name: &str, role: &str, tenant: Option<&str>) -> String {
    let mut args = vec!["user", "create", "--name", name, "--role", role];
    if let Some(t) = tenant {
        args.extend(["--tenant", t]);
    }
    let created = c.json(0, &args);
    assert_eq!(created["user"]["name"], name);
    created["initial_password"].as_str().expect("initial password shown once").to_string()
}

fn totp_code(secret_b32: &str, step: u64) -> String {
    let secret = berqenas_coordinator::totp::from_base32(secret_b32).expect("base32 secret");
    berqenas_coordinator::totp::code(&secret, step)
}

fn audit_text(c: &Cluster) -> String {
    c.ok(0, &["audit", "list", "--limit", "1000", "--output", "json"])
}

#[tokio::test(flavor = "multi_thread")]
async fn platform_admin_enrols_totp_then_signs_in_and_codes_are_used_once() {
    let c = Cluster::single();
    let password = create_user(&c, "root.admin", "platform_admin", None);
    let mut b = Browser::new(&c);

    // First sign-in: the password is right, TOTP must be enrolled; the pending cookie does nothing else.
    let (status, enrol) = b.sign_in("root.admin", &password, None).await;
    assert_eq!(status, StatusCode::OK, "{enrol}");
    assert_eq!(enrol["stage"], "enrol_totp");
    let secret = enrol["totp_secret"].as_str().expect("secret").to_string();
    assert!(enrol["otpauth_uri"].as_str().expect("uri").starts_with("otpauth://totp/"));
    assert!(b.csrf.is_none());
    let (status, _, _) = b.call(Method::GET, "/api/v1/tenants", None, false).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "an enrolment cookie is not a session");
    let (status, _, _) = b.call(Method::GET, "/api/v1/session", None, false).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A wrong code changes nothing; the right one enrols and signs in.
    let now_step = berqenas_coordinator::totp::step_at(berqenas_coordinator::time::now_ms());
    let wrong = format!("{:06}", (totp_code(&secret, now_step).parse::<u32>().expect("digits") + 1) % 1_000_000);
    let (status, _, _) = b.call(Method::POST, "/api/v1/session/totp", Some(json!({"code": wrong})), false).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let code = totp_code(&secret, now_step);
    let (status, signed, resp) = b.call(Method::POST, "/api/v1/session/totp", Some(json!({"code": code})), false).await;
    assert_eq!(status, StatusCode::OK, "{signed}");
    assert_eq!(signed["stage"], "signed_in");
    assert_eq!(signed["user"], json!({"name": "root.admin", "role": "platform_admin", "tenant": null}));
    let (cookie, header) = set_cookie(&resp).expect("session cookie");
    assert_cookie_flags(&header);
    b.cookie = Some(cookie);
    b.csrf = Some(signed["csrf_token"].as_str().expect("csrf").to_string());
    let (status, me, _) = b.call(Method::GET, "/api/v1/session", None, false).await;
    assert_eq!((status, &me["user"]["role"]), (StatusCode::OK, &json!("platform_admin")));

    // A change without the CSRF header is refused, audited, and changes nothing.
    let tenant = json!({"name": "acme"});
    let (status, _, _) = b.call(Method::POST, "/api/v1/tenant", Some(tenant.clone()), false).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(c.json(0, &["tenant", "list"]).as_array().map(Vec::len), Some(0), "nothing created");
    let (status, created, _) = b.call(Method::POST, "/api/v1/tenant", Some(tenant), true).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(c.json(0, &["tenant", "list"]).as_array().map(Vec::len), Some(1));

    // The code just used is refused for a new sign-in (same step), and audited as a failure.
    let mut again = Browser::new(&c);
    let (status, body) = again.sign_in("root.admin", &password, Some(&code)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "totp_required");
    let (status, body) = again.sign_in("root.admin", &password, None).await;
    assert_eq!((status, &body["error"]), (StatusCode::UNAUTHORIZED, &json!("totp_required")));

    // Sign-out ends the session (and needs the CSRF header like every change).
    let (status, _, _) = b.call(Method::DELETE, "/api/v1/session", None, false).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, resp) = b.call(Method::DELETE, "/api/v1/session", None, true).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(set_cookie(&resp).is_some_and(|(v, _)| v.is_empty()), "cookie cleared");
    let (status, _, _) = b.call(Method::GET, "/api/v1/session", None, false).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old cookie is dead after sign-out");

    let audit = audit_text(&c);
    for expected in ["user.create", "user.totp-enrol", "session.csrf-refused", "user.sign-in-failed", "user.sign-out"] {
        assert!(audit.contains(expected), "audit has {expected}");
    }
    assert!(audit.contains("TOTP code already used"), "replay audited");
    let log = c.nodes[0].proc.as_ref().expect("running").log_text();
    for secret_text in [password.as_str(), secret.as_str(), code.as_str()] {
        assert!(!audit.contains(secret_text), "audit holds no password, secret or code");
        assert!(!log.contains(secret_text), "log holds no password, secret or code");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lockout_disable_roles_and_tenant_isolation() {
    let c = Cluster::single();
    c.json(0, &["tenant", "create", "--name", "acme"]);
    c.json(0, &["tenant", "create", "--name", "globex"]);
    let mia = create_user(&c, "mia", "member", Some("acme"));
    let max = create_user(&c, "max", "member", Some("acme"));
    let ada = create_user(&c, "ada", "admin", Some("acme"));
    let olga = create_user(&c, "olga", "owner", Some("acme"));

    // Five wrong passwords lock the user: then even the right one gets 429 with Retry-After.
    let mut attacker = Browser::new(&c);
    for _ in 0..5 {
        let (status, body) = attacker.sign_in("mia", "wrong-password", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    let mut req = attacker.http.post(format!("{}/api/v1/session", attacker.base));
    req = req.json(&json!({"username": "mia", "password": mia}));
    let resp = req.send().await.expect("sign-in");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().get(reqwest::header::RETRY_AFTER).is_some());
    assert!(set_cookie(resp.headers()).is_none());
    let audit = audit_text(&c);
    assert!(audit.matches("\"user.sign-in-failed\"").count() >= 5, "every failure audited");
    assert!(audit.contains("locked_for_s"), "the lockout is audited");
    // An unknown user gets the same answer as a wrong password.
    let (status, body) = Browser::new(&c).sign_in("nobody", "whatever", None).await;
    assert_eq!((status, &body["message"]), (StatusCode::UNAUTHORIZED, &json!("wrong user name or password")));

    // A member reads its tenant and changes nothing.
    let mut member = Browser::new(&c);
    assert_eq!(member.sign_in("max", &max, None).await.0, StatusCode::OK);
    let (status, _, _) = member.call(Method::GET, "/api/v1/tenant/acme/devices", None, false).await;
    assert_eq!(status, StatusCode::OK);
    let device = json!({"name": "laptop", "public_key": "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="});
    let (status, _, _) = member.call(Method::POST, "/api/v1/tenant/acme/devices", Some(device.clone()), true).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a member cannot change");
    assert_eq!(c.json(0, &["device", "list", "--tenant", "acme"]).as_array().map(Vec::len), Some(0));

    // A tenant admin changes its tenant's devices, and nothing of another tenant.
    let mut admin = Browser::new(&c);
    assert_eq!(admin.sign_in("ada", &ada, None).await.0, StatusCode::OK);
    let (status, body, _) = admin.call(Method::POST, "/api/v1/tenant/acme/devices", Some(device.clone()), true).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _, _) = admin.call(Method::GET, "/api/v1/tenant/globex", None, false).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = admin.call(Method::POST, "/api/v1/tenant/globex/devices", Some(device.clone()), true).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "admin of acme on globex");
    let (status, _, _) = admin.call(Method::GET, "/api/v1/tenant/acme/users", None, false).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "users are the owner's");
    let (status, _, _) = admin.call(Method::GET, "/api/v1/users", None, false).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "platform routes are platform admins'");

    // An owner manages its tenant's users, never another tenant's, never the tenant's lifecycle.
    let mut owner = Browser::new(&c);
    assert_eq!(owner.sign_in("olga", &olga, None).await.0, StatusCode::OK);
    let (status, made, _) = owner
        .call(Method::POST, "/api/v1/tenant/acme/users", Some(json!({"name": "nina", "role": "member"})), true)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    assert!(made["initial_password"].as_str().is_some_and(|p| p.len() >= 20));
    let (status, _, _) = owner
        .call(Method::POST, "/api/v1/tenant/globex/users", Some(json!({"name": "eve", "role": "owner"})), true)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "owner of acme on globex");
    let (status, _, _) = owner.call(Method::POST, "/api/v1/tenant/acme/suspend", None, true).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "tenant lifecycle is the platform's");
    let (status, listed, _) = owner.call(Method::GET, "/api/v1/tenant/acme/users", None, false).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!listed.to_string().contains("argon2"), "no hash shown");

    // Disabling a user ends its existing session at once.
    c.json(0, &["user", "disable", "ada"]);
    let (status, _, _) = admin.call(Method::GET, "/api/v1/tenant/acme/devices", None, false).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a disabled user's cookie is refused");
    let (status, _) = Browser::new(&c).sign_in("ada", &ada, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Reset-password lifts the lockout with a new password, shown once; the old one is dead.
    let reset = c.json(0, &["user", "reset-password", "mia"]);
    let fresh = reset["new_password"].as_str().expect("new password").to_string();
    assert_eq!(Browser::new(&c).sign_in("mia", &mia, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(Browser::new(&c).sign_in("mia", &fresh, None).await.0, StatusCode::OK);

    let users = c.json(0, &["user", "list"]);
    assert_eq!(users.as_array().map(Vec::len), Some(5));
    let audit = audit_text(&c);
    let log = c.nodes[0].proc.as_ref().expect("running").log_text();
    for pw in [&mia, &max, &ada, &olga, &fresh] {
        assert!(!audit.contains(pw.as_str()) && !log.contains(pw.as_str()), "no password in the audit or log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_changes_its_own_password_and_its_other_sessions_end() {
    let c = Cluster::single();
    c.json(0, &["tenant", "create", "--name", "acme"]);
    let old = create_user(&c, "olga", "owner", Some("acme"));
    let mut here = Browser::new(&c);
    let mut there = Browser::new(&c);
    assert_eq!(here.sign_in("olga", &old, None).await.0, StatusCode::OK);
    assert_eq!(there.sign_in("olga", &old, None).await.0, StatusCode::OK);
    let path = "/api/v1/session/password";
    let fresh = "a new passphrase for the panel";
    let change = |current: &str, new: &str| Some(json!({"current_password": current, "new_password": new}));

    // Refused, and nothing changes: no CSRF token, a wrong current password, a weak new one, the
    // same one again, an API key (no user behind it).
    let (status, _, _) = here.call(Method::POST, path, change(&old, fresh), false).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a change needs the CSRF token");
    let (status, body, _) = here.call(Method::POST, path, change("not-the-password", fresh), true).await;
    assert_eq!((status, &body["error"]), (StatusCode::FORBIDDEN, &json!("wrong_password")), "{body}");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("current password is wrong")), "{body}");
    for (weak, why) in [
        ("short", "12 to 256 characters"),
        ("aaaaaaaaaaaaaaaa", "different characters"),
        ("olga-is-my-password", "user name"),
        (old.as_str(), "the current one"),
    ] {
        let (status, body, _) = here.call(Method::POST, path, change(&old, weak), true).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{weak}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| m.contains(why)), "{weak}: {body}");
    }
    let keyed = reqwest::Client::new()
        .post(format!("{}{path}", here.base))
        .bearer_auth(&c.key)
        .json(&json!({"current_password": old, "new_password": fresh}))
        .send()
        .await
        .expect("request");
    assert_eq!(keyed.status(), StatusCode::FORBIDDEN, "an API key has no password to change");
    let (status, _, _) = there.call(Method::GET, "/api/v1/session", None, false).await;
    assert_eq!(status, StatusCode::OK, "the refusals ended no session");
    assert_eq!(Browser::new(&c).sign_in("olga", &old, None).await.0, StatusCode::OK, "the old password still works");

    // The change: this session goes on under a new cookie and token; every other one ends.
    let old_cookie = here.cookie.clone();
    let (status, answer, headers) = here.call(Method::POST, path, change(&old, fresh), true).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["user"]["name"], "olga");
    let (cookie, header) = set_cookie(&headers).expect("a new session cookie");
    assert_cookie_flags(&header);
    assert_ne!(Some(&cookie), old_cookie.as_ref());
    here.cookie = Some(cookie);
    here.csrf = answer["csrf_token"].as_str().map(str::to_string);
    let (status, _, _) = here.call(Method::GET, "/api/v1/tenant/acme/users", None, false).await;
    assert_eq!(status, StatusCode::OK, "this session goes on");
    let (status, _, _) = there.call(Method::GET, "/api/v1/session", None, false).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the other session ended");
    let mut before = Browser::new(&c);
    before.cookie = old_cookie;
    let (status, _, _) = before.call(Method::GET, "/api/v1/session", None, false).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "this session's old cookie ended too");

    // The old password is dead, the new one signs in; the change is audited without either.
    let (status, _) = Browser::new(&c).sign_in("olga", &old, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(Browser::new(&c).sign_in("olga", fresh, None).await.0, StatusCode::OK);
    let audit = audit_text(&c);
    assert_eq!(audit.matches("\"user.change-password\"").count(), 6, "the change and each refusal: {audit}");

    // A session is no way around the lockout: wrong current passwords count as failed sign-ins,
    // and once locked even the right one changes nothing, and sign-in is refused too.
    let newer = "yet another passphrase here";
    for _ in 0..5 {
        let (status, body, _) = here.call(Method::POST, path, change("guess-guess-guess", newer), true).await;
        assert!(matches!(status, StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS), "{status} {body}");
    }
    let (status, body, _) = here.call(Method::POST, path, change(fresh, newer), true).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "locked: {body}");
    assert_eq!(Browser::new(&c).sign_in("olga", fresh, None).await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(Browser::new(&c).sign_in("olga", newer, None).await.0, StatusCode::TOO_MANY_REQUESTS, "unchanged");
    let audit = audit_text(&c);
    let log = c.nodes[0].proc.as_ref().expect("running").log_text();
    for pw in [old.as_str(), fresh] {
        assert!(!audit.contains(pw) && !log.contains(pw), "no password in the audit or log");
    }
}
