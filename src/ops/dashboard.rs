//! The operator dashboard: `/dashboard` (every profile) and `/dashboard/:profile` (that profile only), pages and
//! plain ES modules embedded in the binary (`dashboard/` in the repository, `include_str!`), reading this node's
//! status, metrics, cluster view and live routing events from `/dashboard/api/...`.
//!
//! Off unless `dashboard.enabled` is true or a dashboard token is set (`dashboard.token`, `${VAR}` expanded, or
//! `LASSO_DASHBOARD_TOKEN`): then 404. Pages and data need the dashboard token or the admin token, presented as
//! `Authorization: Bearer <token>`, or once as `?token=<token>` on a page, which answers 303 to the same page without
//! the token and sets a session cookie (`lasso_dash`: expiry and an HMAC of it under a key drawn at start, so it is
//! good on this process only; `HttpOnly`, `SameSite=Strict`, `Path=/dashboard`, `dashboard.session_ttl_ms`). A
//! browser's `EventSource` cannot send a header; it sends the cookie. Failed attempts count like every secret
//! (`crate::ops::auth`). Nothing here answers with `Access-Control-Allow-Origin`; pages carry a
//! `Content-Security-Policy` allowing this origin only.

use std::rc::Rc;
use std::sync::OnceLock;

use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::config::env;
use crate::ops::error::OpsError;
use crate::shard::state::Worker;
use crate::wire::http::request::{DASHBOARD_COOKIE, RequestHead};
use crate::wire::http::response::Response;

const INDEX_HTML: &str = include_str!("../../dashboard/index.html");
const APP_JS: &str = include_str!("../../dashboard/app.js");
const CHART_JS: &str = include_str!("../../dashboard/chart.js");
const STYLE_CSS: &str = include_str!("../../dashboard/style.css");

/// The pages' `Content-Security-Policy`: scripts, styles and connections (HTTP, SSE, WebSocket) to this origin only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
                   base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// How a request to the dashboard is allowed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A valid token or session cookie.
    Granted,
    /// Nothing presented (a page answers with the sign-in form).
    Anonymous,
}

fn key() -> &'static str {
    static KEY: OnceLock<String> = OnceLock::new();
    KEY.get_or_init(crate::ops::signature::random_hex)
}

fn cookie_mac(expires: u64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key().as_bytes()).expect("any key length");
    mac.update(b"lasso-dashboard\n");
    mac.update(expires.to_string().as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A session cookie value good until `expires` (Unix seconds).
fn session_value(expires: u64) -> String {
    format!("{expires}.{}", cookie_mac(expires))
}

/// Whether a session cookie value is authentic and not expired at `now`.
fn session_valid(value: &str, now: u64) -> bool {
    let Some((expires, mac)) = value.split_once('.') else {
        return false;
    };
    let Ok(expires) = expires.parse::<u64>() else {
        return false;
    };
    expires > now
        && crate::ops::cluster::secret_matches(mac.as_bytes(), cookie_mac(expires).as_bytes())
}

/// Whether the dashboard is served on this configuration.
pub fn enabled(worker: &Worker) -> bool {
    worker.config.dashboard.on() || env::dashboard_token(&env::process).is_some()
}

/// Whether `presented` is the dashboard token or the admin token (both compared, whichever matches).
fn token_matches(worker: &Worker, presented: &str) -> bool {
    let p = presented.as_bytes();
    let mut ok = false;
    for token in [
        worker.config.dashboard.token.clone(),
        env::dashboard_token(&env::process),
        env::admin_token(&env::process),
    ]
    .into_iter()
    .flatten()
    {
        ok |= crate::ops::cluster::secret_matches(p, token.as_bytes());
    }
    ok
}

fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Checks a dashboard request: a bearer token, a `token` query parameter (pages) or the session cookie. A wrong
/// token or a forged or expired cookie is a failed attempt; nothing at all is [`Access::Anonymous`].
pub fn authorize(worker: &Worker, head: &RequestHead) -> Result<Access, OpsError> {
    if !enabled(worker) {
        return Err(OpsError::not_found(
            "the dashboard is disabled (set dashboard.enabled or a dashboard token)",
        ));
    }
    // A bearer is taken as sent; a token in the query as a form sends it (percent-encoded).
    let presented = crate::ops::admin::bearer(head)
        .map(str::to_string)
        .or_else(|| query_value(&head.query, "token").map(percent_decode));
    let verdict = match (presented, head.dashboard_cookie.as_deref()) {
        (Some(token), _) => token_matches(worker, &token),
        (None, Some(cookie)) => session_valid(cookie, crate::ops::signature::now_unix()),
        (None, None) => {
            // Still refused while the address is over its limit.
            crate::ops::auth::check(head.peer, &worker.config.server, "dashboard", "", true)?;
            return Ok(Access::Anonymous);
        }
    };
    crate::ops::auth::check(
        head.peer,
        &worker.config.server,
        "dashboard",
        "dashboard token or session",
        verdict,
    )?;
    Ok(Access::Granted)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (hex, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn refuse(e: OpsError) -> Response {
    Response::from(e)
}

fn asset(content_type: &'static str, body: &str) -> Response {
    let mut r = Response::json(200, body.as_bytes().to_vec());
    r.content_type = content_type;
    r.with_header("Cache-Control", "no-cache")
        .with_header("X-Content-Type-Options", "nosniff")
}

fn page(worker: &Worker, head: &RequestHead, profile: Option<&str>) -> Response {
    if let Some(name) = profile {
        if worker.config.profile(name).is_none() {
            return refuse(OpsError::not_found(format!("unknown profile '{name}'")));
        }
    }
    let access = match authorize(worker, head) {
        Ok(a) => a,
        Err(e) if e.status == 401 => return sign_in(401),
        Err(e) => return refuse(e),
    };
    if access == Access::Anonymous {
        return sign_in(401);
    }
    if query_value(&head.query, "token").is_some() {
        // Exchanged for a cookie; the token leaves the address bar and the history.
        let ttl = worker.config.dashboard.session_ttl.as_secs().max(1);
        let expires = crate::ops::signature::now_unix() + ttl;
        return Response::empty(303)
            .with_header("Location", head.path.clone())
            .with_header(
                "Set-Cookie",
                format!(
                    "{DASHBOARD_COOKIE}={}; Max-Age={ttl}; Path=/dashboard; HttpOnly; SameSite=Strict",
                    session_value(expires)
                ),
            )
            .with_header("Cache-Control", "no-store")
            .with_header("Referrer-Policy", "no-referrer");
    }
    let mut r = Response::json(200, INDEX_HTML.as_bytes().to_vec());
    r.content_type = "text/html; charset=utf-8";
    r.with_header("Content-Security-Policy", CSP)
        .with_header("Cache-Control", "no-store")
        .with_header("Referrer-Policy", "no-referrer")
        .with_header("X-Frame-Options", "DENY")
}

/// The sign-in form (a GET of the same page with `?token=`).
fn sign_in(status: u16) -> Response {
    let body = "<!doctype html><html><head><meta charset=\"utf-8\"><title>Lasso dashboard</title><link rel=\"icon\" href=\"data:,\">\
                <link rel=\"stylesheet\" href=\"/dashboard/assets/style.css\"></head><body class=\"signin\">\
                <form method=\"get\"><h1>Lasso dashboard</h1><label>Token <input type=\"password\" name=\"token\" \
                autocomplete=\"current-password\" autofocus></label><button>Open</button></form></body></html>";
    let mut r = Response::json(status, body.as_bytes().to_vec());
    r.content_type = "text/html; charset=utf-8";
    r.with_header("Content-Security-Policy", CSP)
        .with_header("Cache-Control", "no-store")
        .with_header("X-Frame-Options", "DENY")
}

#[derive(Serialize)]
struct Overview<'a> {
    node_id: &'a str,
    region: Option<&'a str>,
    /// The profiles this page may show (one on a profile's page).
    profiles: Vec<&'a str>,
    events_dropped: u64,
    status: crate::ops::snapshot::Status,
}

/// `GET /dashboard/api/status[?profile=name]`: this node's status, only the profile's chains when one is named.
async fn overview(worker: &Rc<Worker>, profile: Option<&str>) -> Response {
    let mut status = crate::ops::snapshot::status(worker).await;
    if let Some(p) = profile {
        status.chains.retain(|c| c.profile == p);
    }
    let profiles = match profile {
        Some(p) => vec![p],
        None => worker
            .config
            .profiles
            .iter()
            .map(|p| p.name.as_str())
            .collect(),
    };
    let body = Overview {
        node_id: &worker.shared.node_id,
        region: worker.shared.region.as_deref(),
        profiles,
        events_dropped: crate::telemetry::events::dropped(),
        status,
    };
    Response::json(
        200,
        sonic_rs::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec()),
    )
    .with_header("Cache-Control", "no-store")
}

/// Answers `/dashboard...` (everything but the event stream, which takes its connection over).
pub async fn handle(worker: &Rc<Worker>, head: &RequestHead) -> Response {
    if !enabled(worker) {
        return refuse(OpsError::not_found(
            "the dashboard is disabled (set dashboard.enabled or a dashboard token)",
        ));
    }
    let path = head.path.trim_end_matches('/');
    let rest = path.strip_prefix("/dashboard").unwrap_or("");
    match rest {
        "/assets/app.js" => return asset("text/javascript; charset=utf-8", APP_JS),
        "/assets/chart.js" => return asset("text/javascript; charset=utf-8", CHART_JS),
        "/assets/style.css" => return asset("text/css; charset=utf-8", STYLE_CSS),
        "" => return page(worker, head, None),
        _ => {}
    }
    let Some(api) = rest.strip_prefix("/api/") else {
        let name = rest.trim_start_matches('/');
        if name.contains('/') {
            return refuse(OpsError::not_found("no such dashboard page"));
        }
        return page(worker, head, Some(name));
    };
    match authorize(worker, head) {
        Ok(Access::Granted) => {}
        Ok(Access::Anonymous) => {
            return refuse(OpsError::unauthorized("missing dashboard token or session"));
        }
        Err(e) => return refuse(e),
    }
    let profile = query_value(&head.query, "profile");
    if let Some(name) = profile {
        if worker.config.profile(name).is_none() {
            return refuse(OpsError::not_found(format!("unknown profile '{name}'")));
        }
    }
    match api {
        "status" => overview(worker, profile).await,
        "cluster" => crate::ops::cluster::dashboard_view(worker, profile).await,
        m if m.starts_with("metrics/") => {
            crate::ops::api::chain_metrics(worker, &m["metrics/".len()..], &head.query).await
        }
        _ => refuse(OpsError::not_found("no such dashboard endpoint")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_cookies_are_signed_and_expire() {
        let v = session_value(1_000);
        assert!(session_valid(&v, 999));
        assert!(!session_valid(&v, 1_000));
        // A later expiry under the old signature is a forgery.
        let forged = format!("2000.{}", v.split_once('.').unwrap().1);
        assert!(!session_valid(&forged, 999));
        assert!(!session_valid("garbage", 0));
    }

    #[test]
    fn tokens_in_queries_are_percent_decoded() {
        assert_eq!(percent_decode("a%2Bb+c%"), "a+b c%");
        assert_eq!(percent_decode("plain"), "plain");
    }
}
