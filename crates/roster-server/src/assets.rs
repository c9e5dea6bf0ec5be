//! The built-in pages' files, compiled into the binary (`src/assets/`): the demo room page,
//! the dashboard, their scripts and one stylesheet. Served under `/assets/NAME` with a
//! Content-Security-Policy that lets a page load only from its own origin, so nothing is
//! fetched from elsewhere (no CDN) and the browser would refuse it if anything tried.
//!
//! `roster.js` is the pages' socket client: Phoenix Channels v2 and phoenix.js's presence
//! semantics in one readable file (see the module comment at its top).

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The demo room page (`/`).
pub(crate) const DEMO_HTML: &str = include_str!("assets/demo.html");
/// The dashboard page (`/dashboard`).
pub(crate) const DASHBOARD_HTML: &str = include_str!("assets/dashboard.html");

/// Every file under `/assets/`: name, content type, content.
const FILES: &[(&str, &str, &str)] = &[
    ("roster.js", "text/javascript; charset=utf-8", include_str!("assets/roster.js")),
    ("demo.js", "text/javascript; charset=utf-8", include_str!("assets/demo.js")),
    ("dashboard.js", "text/javascript; charset=utf-8", include_str!("assets/dashboard.js")),
    ("roster.css", "text/css; charset=utf-8", include_str!("assets/roster.css")),
];

/// Only this origin, for everything: scripts, styles, images, sockets.
const CSP: &str = "default-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'self'; frame-ancestors 'none'";

/// `/assets/NAME`.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/assets/{name}", get(asset))
}

async fn asset(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => with_policy(([(header::CONTENT_TYPE, *content_type)], *body).into_response()),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

/// An HTML page of [`FILES`]' kind, with the same policy.
pub(crate) fn html(body: &'static str) -> Response {
    with_policy(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response())
}

fn with_policy(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // The files change with the binary: revalidate rather than run an old script.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pages work offline: no file refers to another origin.
    #[test]
    fn no_asset_loads_anything_from_another_origin() {
        let all = FILES
            .iter()
            .map(|(n, _, b)| (*n, *b))
            .chain([("demo.html", DEMO_HTML), ("dashboard.html", DASHBOARD_HTML)]);
        for (name, body) in all {
            for needle in ["http://", "https://", "//cdn", "@import url("] {
                // An SVG namespace is an identifier, not a request.
                let hits =
                    body.match_indices(needle).filter(|(i, _)| !body[*i..].starts_with("http://www.w3.org/2000/svg"));
                assert_eq!(hits.count(), 0, "{name} mentions {needle}");
            }
        }
    }
}
