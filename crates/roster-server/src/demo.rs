//! Demo mode (`[server] demo = true`, the default of `roster serve` without a config): the
//! demo room page at `/` and the dev-only token endpoint it signs in with.
//!
//! The page's URL says who to be: `/?topic=room:lobby&user=alice` signs in as `alice`
//! (`&role=admin` for an admin, `&name=Ada` for a display name), `/?topic=room:lobby` joins
//! without a token, as an anonymous viewer.
//!
//! `GET /demo/policy?topic=T` tells the page which slot policy applies to its topic.
//!
//! `GET /demo/token?user=U&role=R` signs a token for *anyone who asks*: it exists only in demo
//! mode, which the config refuses unless every `http_addr` is loopback. It must never be on in
//! production, where a backend mints tokens after its own login (docs/protocol.md). With demo
//! off, neither route exists (404).

use crate::app::AppState;
use crate::token::{check_subject, mint, Claims};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use roster_core::{Role, Topic, UserId};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// How long a demo token holds: an hour (a page open longer reconnects with a fresh one).
const DEMO_TOKEN_TTL_S: u64 = 3600;

/// The longest user id or role the endpoint signs.
const MAX_CLAIM_BYTES: usize = 64;

/// `/`, `/demo/token` and `/demo/policy` when demo mode is on; otherwise `/` explains where the pages are.
pub(crate) fn routes(demo: bool) -> Router<Arc<AppState>> {
    if demo {
        Router::new().route("/", get(page)).route("/demo/token", get(token)).route("/demo/policy", get(policy))
    } else {
        Router::new().route("/", get(off))
    }
}

async fn page() -> Response {
    crate::assets::html(crate::assets::DEMO_HTML)
}

async fn off() -> Response {
    (
        StatusCode::NOT_FOUND,
        "This Roster node does not serve the demo page ([server] demo = false). \
         The dashboard is at /dashboard; clients connect to /socket/websocket.\n",
    )
        .into_response()
}

#[derive(Deserialize)]
struct TokenQuery {
    user: String,
    role: Option<String>,
}

/// `GET /demo/token?user=U&role=R`: `{"token": T}` for `U` with role `R` (default `user`),
/// signed with the node's secret; 400 `{"reason": "bad_request"}` for a user no token may
/// carry (empty, `anonymous`) or claims longer than 64 bytes.
async fn token(State(st): State<Arc<AppState>>, query: Result<Query<TokenQuery>, QueryRejection>) -> Response {
    let Ok(Query(q)) = query else {
        return bad_request("the query is ?user=U&role=R");
    };
    let role = q.role.filter(|r| !r.is_empty()).unwrap_or_else(|| "user".to_owned());
    let user = UserId::from(q.user.as_str());
    if q.user.len() > MAX_CLAIM_BYTES || role.len() > MAX_CLAIM_BYTES {
        return bad_request("user and role are at most 64 bytes");
    }
    if check_subject(&user).is_err() {
        return bad_request("the user is neither empty nor \"anonymous\"");
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let claims = Claims::new(user, Role::from(role.as_str()), now + DEMO_TOKEN_TTL_S);
    let token = mint(&st.secret, &claims);
    ([(header::CACHE_CONTROL, "no-store")], Json(json!({ "token": token, "user": q.user, "role": role })))
        .into_response()
}

#[derive(Deserialize)]
struct PolicyQuery {
    topic: String,
}

/// `GET /demo/policy?topic=T`: the slot policy that applies to `T` (for the page to explain
/// what a second tab will do).
async fn policy(State(st): State<Arc<AppState>>, query: Result<Query<PolicyQuery>, QueryRejection>) -> Response {
    let Ok(Query(q)) = query else {
        return bad_request("the query is ?topic=T");
    };
    Json(st.node.config().policy_for(&Topic::from(q.topic.as_str()))).into_response()
}

fn bad_request(detail: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "reason": "bad_request", "detail": detail }))).into_response()
}
