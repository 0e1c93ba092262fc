//! HTML building: escaping, the page frame, security headers. No templates engine: the
//! pages are small and escaping every interpolated value by hand through [`esc`] is auditable.

use std::fmt::Write as _;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::Session;

/// Escapes text for HTML element content and double-quoted attributes.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a path segment for a link (ids come from agents: anything may be in them).
pub fn url_seg(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}\
header{background:#1d2430;color:#fff;padding:.6em 1.2em;display:flex;gap:1.2em;align-items:center;flex-wrap:wrap}\
header a{color:#cfe3ff;text-decoration:none}header a:hover{text-decoration:underline}\
header .who{margin-left:auto;color:#aab}header form{display:inline}\
main{max-width:1200px;margin:1em auto;padding:0 1.2em}\
table{border-collapse:collapse;width:100%;background:#fff}th,td{border-bottom:1px solid #e2e5ea;padding:.35em .5em;text-align:left;vertical-align:top}\
th{background:#eef1f5}pre{white-space:pre-wrap;word-break:break-all;background:#f0f2f5;padding:.4em;margin:.3em 0;font-size:13px}\
.ok{color:#176b2c}.bad{color:#a8201a}.muted{color:#68707d}.tag{display:inline-block;background:#e6ebf2;border-radius:3px;padding:0 .35em;margin:0 .2em .2em 0;font-size:13px}\
ol.timeline{list-style:none;padding:0}ol.timeline li{background:#fff;border-left:4px solid #8aa1bf;margin:.5em 0;padding:.5em .8em}\
ol.timeline li.k-action_result,ol.timeline li.k-resolved,ol.timeline li.k-approved{border-color:#2f9e4f}\
ol.timeline li.k-escalated,ol.timeline li.k-denied,ol.timeline li.k-refused,ol.timeline li.k-expired{border-color:#c4412f}\
.flash{background:#fff3cd;border:1px solid #e0c36a;padding:.5em .8em}.error{background:#fde2df;border:1px solid #d99;padding:.5em .8em}\
input,select,textarea,button{font:inherit}textarea{width:100%;max-width:40em}form.inline{display:inline}\
button{padding:.3em .9em;cursor:pointer}button.approve{background:#2f9e4f;color:#fff;border:0}button.deny{background:#c4412f;color:#fff;border:0}";

/// A full page for a logged-in operator: the navigation, who is logged in, a logout form.
pub fn page(title: &str, session: &Session, body: &str) -> Response {
    let op = &session.operator;
    let html = format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
<meta name=viewport content=\"width=device-width,initial-scale=1\">\
<title>{title} · gatemend</title><style>{STYLE}</style></head><body>\
<header><strong>gatemend</strong><a href=\"/fleet\">Fleet</a><a href=\"/incidents\">Incidents</a>\
<a href=\"/approvals\">Approvals</a><a href=\"/audit\">Audit</a>\
<span class=who>{name} ({role})</span>\
<form method=post action=\"/logout\"><input type=hidden name=csrf value=\"{csrf}\"><button>Log out</button></form>\
</header><main><h1>{title}</h1>{body}</main></body></html>",
        title = esc(title),
        name = esc(&op.name),
        role = op.role,
        csrf = esc(&session.csrf),
    );
    respond(StatusCode::OK, html)
}

/// The login page, with an error when the last attempt failed.
pub fn login(status: StatusCode, error: Option<&str>) -> Response {
    login_page(status, error)
}

/// The login page answering a locked-out address: 429 with how long to wait.
pub fn locked_out(retry_after_secs: u64) -> Response {
    let mut response = login_page(
        StatusCode::TOO_MANY_REQUESTS,
        Some(&format!(
            "Too many wrong tokens from your address; try again in {retry_after_secs} s."
        )),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    response
}

fn login_page(status: StatusCode, error: Option<&str>) -> Response {
    let error = error
        .map(|e| format!("<p class=error>{}</p>", esc(e)))
        .unwrap_or_default();
    let html = format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
<meta name=viewport content=\"width=device-width,initial-scale=1\">\
<title>Log in · gatemend</title><style>{STYLE}</style></head><body>\
<header><strong>gatemend</strong></header><main><h1>Log in</h1>{error}\
<form method=post action=\"/login\"><p><label>Operator token<br>\
<input type=password name=token id=token size=70 autocomplete=off autofocus required></label></p>\
<p><button id=login>Log in</button></p></form>\
<p class=muted>Tokens are made with <code>gatemend tokens new</code> and listed (as hashes) in the controller's tokens file.</p>\
</main></body></html>"
    );
    respond(status, html)
}

/// An error page for a logged-in operator (403 refusals, 409 conflicts ...).
pub fn problem(status: StatusCode, session: &Session, title: &str, message: &str) -> Response {
    let mut response = page(
        title,
        session,
        &format!("<p class=error id=problem>{}</p>", esc(message)),
    );
    *response.status_mut() = status;
    response
}

/// The Content-Security-Policy of every page. No page runs a script, so none may run: with
/// `default-src 'none'` and no `script-src`, neither inline scripts, event handler
/// attributes, `javascript:` URLs nor scripts from anywhere are allowed, and markup an agent
/// smuggled past [`esc`] still could not run. The one inline `<style>` of the frame is
/// allowed; styles cannot run code.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// HTML with headers that keep it ours: no framing, no scripts, no outside styles, no caching
/// of pages that show the audit, the Referer only to ourselves.
pub fn respond(status: StatusCode, html: String) -> Response {
    let mut response = (status, html).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup_and_links_no_separators() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(url_seg("f1@2/a b?c"), "f1%402%2Fa%20b%3Fc");
    }

    /// The directive that governs scripts: `script-src`, or `default-src` without it.
    fn script_sources(csp: &str) -> String {
        let directives: Vec<(&str, &str)> = csp
            .split(';')
            .map(str::trim)
            .map(|d| d.split_once(' ').unwrap_or((d, "")))
            .collect();
        let find = |name: &str| {
            directives
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        };
        find("script-src")
            .or_else(|| find("default-src"))
            .unwrap_or_default()
    }

    #[test]
    fn pages_may_run_no_script_at_all() {
        let response = respond(StatusCode::OK, String::new());
        let csp = response.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("ASCII");
        let scripts = script_sources(csp);
        assert_eq!(scripts, "'none'", "{csp}");
        assert!(!scripts.contains("unsafe-inline"), "{csp}");
        assert_eq!(
            script_sources("default-src 'none'; script-src 'unsafe-inline'"),
            "'unsafe-inline'",
            "the check reads script-src first"
        );
    }
}
