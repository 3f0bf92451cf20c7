//! The HTML templates of the console: the layout (navigation by role, CSRF meta tag),
//! the sign-in and error pages and the embedded static files. Everything is escaped with
//! [`branchrec_core::console::html_escape`]; no inline script or style (the CSP allows
//! only `/static/…`).

use hyper::{header, StatusCode};

use branchrec_core::console::{html_escape as esc, Permission};

use super::auth::Ctx;
use super::Resp;

const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const ICON: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 16 16\"><rect width=\"16\" height=\"16\" rx=\"3\" fill=\"#17324f\"/><circle cx=\"8\" cy=\"8\" r=\"4\" fill=\"#e0453a\"/></svg>";

/// `/static/…`, served without a session.
pub fn static_file(path: &str) -> Option<Resp> {
    let (ct, body) = match path {
        "/static/app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "/static/app.css" => ("text/css; charset=utf-8", APP_CSS),
        "/static/icon.svg" | "/favicon.ico" => ("image/svg+xml", ICON),
        _ => return None,
    };
    Some(Resp {
        status: StatusCode::OK,
        headers: vec![
            (header::CONTENT_TYPE, ct.into()),
            (header::CACHE_CONTROL, "max-age=300".into()),
        ],
        body: body.into(),
    })
}

fn layout(title: &str, csrf: &str, nav: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta name=\"csrf-token\" content=\"{}\">\
<title>{} · branchrec compliance console</title>\
<link rel=\"icon\" href=\"/static/icon.svg\"><link rel=\"stylesheet\" href=\"/static/app.css\"><script src=\"/static/app.js\" defer></script></head>\
<body>{nav}<main>{body}</main></body></html>\n",
        esc(csrf),
        esc(title)
    )
}

fn nav(ctx: &Ctx, active: &str) -> String {
    let u = &ctx.user;
    let mut links = Vec::new();
    let mut add = |p: Permission, href: &str, name: &str| {
        if u.role.allows(p) {
            let cur = if name == active {
                " aria-current=\"page\""
            } else {
                ""
            };
            links.push(format!("<a href=\"{href}\"{cur}>{name}</a>"));
        }
    };
    add(Permission::Metadata, "/search", "Search");
    add(Permission::Hold, "/cases", "Cases");
    add(Permission::Audit, "/audit", "Audit");
    add(Permission::Fleet, "/fleet", "Fleet");
    add(Permission::Users, "/admin/users", "Users");
    format!(
        "<header><span class=\"brand\">branchrec</span><nav>{}</nav>\
<form method=\"post\" action=\"/logout\" class=\"logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<span class=\"who\" data-role=\"{}\">{} ({})</span> <button type=\"submit\">Sign out</button></form></header>",
        links.join(""),
        esc(&ctx.session.csrf),
        u.role.as_str(),
        esc(&u.username),
        u.role.as_str()
    )
}

/// A page in the signed-in layout.
pub fn page(ctx: &Ctx, active: &str, title: &str, body: &str) -> Resp {
    Resp::html(
        StatusCode::OK,
        layout(title, &ctx.session.csrf, &nav(ctx, active), body),
    )
}

/// An error page.
pub fn error_page(status: StatusCode, msg: &str) -> String {
    layout(
        status.canonical_reason().unwrap_or("Error"),
        "",
        "<header><span class=\"brand\">branchrec</span><nav><a href=\"/\">Home</a></nav></header>",
        &format!(
            "<h1>{} {}</h1><p class=\"error\" role=\"alert\">{}</p>",
            status.as_u16(),
            esc(status.canonical_reason().unwrap_or("")),
            esc(msg)
        ),
    )
}

/// The sign-in form.
pub fn login_page(csrf: &str, error: Option<&str>, sso: Option<&str>) -> String {
    layout(
        "Sign in",
        csrf,
        "<header><span class=\"brand\">branchrec</span></header>",
        &format!(
            "<h1>Sign in</h1>{}<form method=\"post\" action=\"/login\" class=\"card\">\
<input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<label>User name <input name=\"username\" id=\"username\" autocomplete=\"username\" required></label>\
<label>Password <input name=\"password\" id=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
<button type=\"submit\" id=\"login\">Continue</button></form>{}",
            error
                .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)))
                .unwrap_or_default(),
            esc(csrf),
            sso.map(|l| format!("<p class=\"card\"><a href=\"/login/oidc\" id=\"sso\">{}</a></p>", esc(l)))
                .unwrap_or_default()
        ),
    )
}

/// After an SSO callback: continue on a same-site navigation (the session cookie is
/// SameSite=Strict).
pub fn continue_page() -> String {
    "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url=/\"><title>Signed in</title></head><body><p>Signed in. <a href=\"/\" id=\"continue\">Continue</a></p></body></html>\n".into()
}

/// The TOTP form.
pub fn mfa_page(csrf: &str, error: Option<&str>) -> String {
    layout(
        "Second factor",
        csrf,
        "<header><span class=\"brand\">branchrec</span></header>",
        &format!(
            "<h1>Authenticator code</h1>{}<form method=\"post\" action=\"/login/mfa\" class=\"card\">\
<input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<label>6-digit code <input name=\"code\" id=\"code\" inputmode=\"numeric\" autocomplete=\"one-time-code\" pattern=\"[0-9]{{6}}\" required></label>\
<button type=\"submit\" id=\"verify\">Sign in</button></form>",
            error
                .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)))
                .unwrap_or_default(),
            esc(csrf)
        ),
    )
}
