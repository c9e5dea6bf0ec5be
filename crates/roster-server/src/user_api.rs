//! `GET /user?id=U` (bearer `api_key`): a user as its home sees it, from any node, for
//! backends in any language: the home, the live activation's fencing token (or `null`), and
//! every session of the user across the cluster.
//!
//! ```text
//! {"user": "42", "home": "b", "activation": "1700000000123.7", "handed_over_from": null,
//!  "sessions": [{"tab_id": "t1", "topic": "room:1", "scope": "topic:room:1", "node": "a",
//!                "token": "1700000000123.5", "state": "held", "in_doubt": false}]}
//! ```

use crate::app::{refusal, AppState};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use roster_core::{SessionState, SessionView, TabKey, UserId, UserView};
use roster_runtime::UserError;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

#[derive(Deserialize)]
pub(crate) struct UserQuery {
    id: String,
}

pub(crate) async fn user(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<UserQuery>, QueryRejection>,
) -> Response {
    if let Some(r) = refusal(&st, &headers) {
        return r;
    }
    let Ok(Query(q)) = query else {
        let detail = "the query is ?id=<user id>";
        return (StatusCode::BAD_REQUEST, Json(json!({"reason": "bad_request", "detail": detail}))).into_response();
    };
    match st.node.user(UserId::from(q.id)).info().await {
        Ok(view) => Json(user_json(&view)).into_response(),
        Err(e @ (UserError::NoHome | UserError::Timeout(_))) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"reason": "no_quorum", "detail": e.to_string()})))
                .into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"reason": e.reason(), "detail": e.to_string()})))
            .into_response(),
    }
}

/// The JSON form of a home's view of a user.
pub fn user_json(view: &UserView) -> Value {
    json!({
        "user": view.user.as_str(),
        "home": view.home.as_str(),
        "activation": view.activation.map(|t| t.to_string()),
        "handed_over_from": view.handed_over_from.map(|t| t.to_string()),
        "sessions": view.sessions.iter().map(session_json).collect::<Vec<_>>(),
    })
}

fn session_json(s: &SessionView) -> Value {
    let mut v = json!({
        "tab_id": match &s.tab {
            TabKey::Tab(t) => Some(t.as_str()),
            TabKey::Conn(_) => None,
        },
        "topic": s.topic.as_ref().map(|t| t.as_str()),
        "scope": s.scope.to_string(),
        "node": s.conn.gateway.node.as_str(),
        "token": s.token.to_string(),
        "state": s.state.as_str(),
        "in_doubt": s.in_doubt,
    });
    if let SessionState::Revoking { reason } = &s.state {
        v["reason"] = Value::from(reason.as_str());
    }
    v
}
