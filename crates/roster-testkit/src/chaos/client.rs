//! One chaos client: a tokio task around one WebSocket speaking Phoenix v2 (the frames of
//! `roster-load`'s protocol module), obeying the workload's [`Cmd`]s and recording every
//! observation in the [`Recorder`]: the connect, each join's reply, `slot_revoked`,
//! `phx_close`/`phx_error`, and every change of each channel's presence view, kept with
//! phoenix.js semantics (`syncState`/`syncDiff`, diffs before the state wait for it, frames of
//! an earlier join of the topic ignored).

use crate::chaos::history::{Event, JoinKind, MetaObs, Recorder, ViewSnap};
use crate::cluster::unix_ms;
use crate::load::protocol::{self, Incoming, ReplyStatus};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// How long a connect (TCP and WebSocket handshake) may take: a stopped node accepts the TCP
/// connection into its backlog but never answers the handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What the workload tells a client.
#[derive(Debug)]
pub(crate) enum Cmd {
    /// `phx_join` `topic` as join `join` (its `join_ref` and its meta's `c`).
    Join { join: u32, topic: String, tab: Option<String>, kind: JoinKind },
    /// `phx_leave` the channel of `join`.
    Leave { join: u32 },
    /// A broadcast push on the channel of `join`.
    Push { join: u32 },
    /// `presence:update` on the channel of `join` (the meta keeps its `c`).
    Update { join: u32 },
    /// A WebSocket close frame, then the server's answer.
    Close,
    /// Drop the TCP connection without a close frame (a crashed tab).
    Drop,
    /// Stop reading and writing: the server's pings go unanswered.
    Stall,
    /// This client's views of its live channels.
    Snapshot(oneshot::Sender<Vec<ViewSnap>>),
}

/// Who the client is.
pub(crate) struct ClientSpec {
    pub socket: u32,
    pub node: String,
    pub addr: SocketAddr,
    /// `None`: anonymous.
    pub token: Option<String>,
    pub user: Option<String>,
    pub role: String,
    pub tab: Option<String>,
}

/// A presence view with phoenix.js semantics: key → metas (by `phx_ref`).
#[derive(Default)]
struct PresenceView {
    state: BTreeMap<String, Vec<MetaObs>>,
    synced: bool,
    pending: Vec<Value>,
}

impl PresenceView {
    fn metas(&self) -> Vec<MetaObs> {
        let mut v: Vec<MetaObs> = self.state.values().flatten().cloned().collect();
        v.sort();
        v
    }

    fn cs(&self) -> BTreeSet<u32> {
        self.state.values().flatten().filter_map(|m| m.c).collect()
    }

    fn sync_state(&mut self, payload: &Value) {
        self.state = read_map(payload);
        self.synced = true;
        for diff in std::mem::take(&mut self.pending) {
            self.apply(&diff);
        }
    }

    fn sync_diff(&mut self, payload: Value) {
        if self.synced {
            self.apply(&payload);
        } else {
            self.pending.push(payload);
        }
    }

    fn apply(&mut self, diff: &Value) {
        for (key, metas) in read_map(&diff["joins"]) {
            let entry = self.state.entry(key).or_default();
            for m in metas {
                if !entry.iter().any(|e| e.phx_ref == m.phx_ref) {
                    entry.push(m);
                }
            }
        }
        for (key, metas) in read_map(&diff["leaves"]) {
            if let Some(entry) = self.state.get_mut(&key) {
                entry.retain(|e| !metas.iter().any(|m| m.phx_ref == e.phx_ref));
                if entry.is_empty() {
                    self.state.remove(&key);
                }
            }
        }
    }
}

/// `{key: {"metas": [...]}}` as metas with their `c`.
pub(crate) fn read_map(map: &Value) -> BTreeMap<String, Vec<MetaObs>> {
    let mut out = BTreeMap::new();
    let Some(obj) = map.as_object() else { return out };
    for (key, entry) in obj {
        let metas = entry["metas"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|m| MetaObs {
                        key: key.clone(),
                        phx_ref: m["phx_ref"].as_str().unwrap_or("").to_owned(),
                        c: m["c"].as_u64().map(|c| c as u32),
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.insert(key.clone(), metas);
    }
    out
}

struct Channel {
    join: u32,
    topic: String,
    acked: bool,
    ended: bool,
    view: PresenceView,
}

enum Awaiting {
    Join(u32),
    Other,
}

/// Run one client until its socket ends. `alive` turns false when it does.
pub(crate) async fn run(
    spec: ClientSpec,
    recorder: Arc<Recorder>,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    alive: Arc<AtomicBool>,
) {
    let socket = spec.socket;
    let ws = match connect(&spec).await {
        Ok(ws) => ws,
        Err(error) => {
            recorder.record(Event::ConnectFailed { at: unix_ms(), socket, node: spec.node.clone(), error });
            alive.store(false, Ordering::SeqCst);
            return;
        }
    };
    recorder.record(Event::Connected {
        at: unix_ms(),
        socket,
        node: spec.node.clone(),
        user: spec.user.clone(),
        role: spec.role.clone(),
        tab: spec.tab.clone(),
    });
    let mut client =
        Client { socket, recorder: recorder.clone(), ws, channels: Vec::new(), next_ref: 1, replies: BTreeMap::new() };
    let by = client.serve(&mut cmds).await;
    recorder.record(Event::SocketEnd { at: unix_ms(), socket, by });
    alive.store(false, Ordering::SeqCst);
}

async fn connect(spec: &ClientSpec) -> Result<WebSocketStream<TcpStream>, String> {
    let attempt = async {
        let stream = TcpStream::connect(spec.addr).await.map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let query = spec.token.as_ref().map(|t| format!("&token={t}")).unwrap_or_default();
        let url = format!("ws://{}/socket/websocket?vsn=2.0.0{query}", spec.addr);
        let (ws, _) = tokio_tungstenite::client_async(url, stream).await.map_err(|e| format!("handshake: {e}"))?;
        Ok(ws)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt).await.unwrap_or_else(|_| Err("timed out".to_owned()))
}

struct Client {
    socket: u32,
    recorder: Arc<Recorder>,
    ws: WebSocketStream<TcpStream>,
    channels: Vec<Channel>,
    next_ref: u64,
    replies: BTreeMap<u64, Awaiting>,
}

impl Client {
    /// Serve until the socket ends; returns how it ended.
    async fn serve(&mut self, cmds: &mut mpsc::UnboundedReceiver<Cmd>) -> String {
        loop {
            tokio::select! {
                msg = self.ws.next() => match msg {
                    Some(Ok(Message::Text(text))) => self.on_text(text.as_str()),
                    Some(Ok(Message::Close(frame))) => {
                        let code = frame.map(|f| u16::from(f.code)).unwrap_or(1005);
                        self.end_channels("socket closed");
                        return format!("server {code}");
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        self.end_channels("socket closed");
                        return "server 1006".to_owned();
                    }
                },
                cmd = cmds.recv() => match cmd {
                    None | Some(Cmd::Drop) => return "client_drop".to_owned(),
                    Some(Cmd::Close) => return self.close().await,
                    Some(Cmd::Stall) => {
                        self.recorder.record(Event::Stalled { at: unix_ms(), socket: self.socket });
                        // Nothing is read or written from now on; only a Drop (or the end of
                        // the run) ends it.
                        loop {
                            match cmds.recv().await {
                                None | Some(Cmd::Drop) | Some(Cmd::Close) => return "client_drop".to_owned(),
                                Some(Cmd::Snapshot(tx)) => { let _ = tx.send(Vec::new()); }
                                Some(_) => {}
                            }
                        }
                    }
                    Some(other) => self.command(other).await,
                },
            }
        }
    }

    async fn close(&mut self) -> String {
        let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
        if self.ws.send(Message::Close(Some(frame))).await.is_err() {
            return "client_close".to_owned();
        }
        // Wait (bounded) for the server's close; frames before it are still observations.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => self.on_text(text.as_str()),
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) | Err(_) => break,
                Ok(Some(Ok(_))) => {}
            }
        }
        "client_close".to_owned()
    }

    async fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Join { join, topic, tab, kind } => {
                let r = self.take_ref(Awaiting::Join(join));
                let mut payload = serde_json::json!({"meta": {"c": join}});
                if let Some(tab) = &tab {
                    payload["tab_id"] = Value::String(tab.clone());
                }
                let jr = join.to_string();
                let text = protocol::encode(Some(&jr), &r, &topic, "phx_join", &payload.to_string());
                self.channels.retain(|c| !(c.topic == topic && c.ended));
                self.channels.push(Channel {
                    join,
                    topic: topic.clone(),
                    acked: false,
                    ended: false,
                    view: PresenceView::default(),
                });
                self.recorder.record(Event::Join { at: unix_ms(), socket: self.socket, join, topic, tab, kind });
                let _ = self.ws.send(Message::text(text)).await;
            }
            Cmd::Leave { join } => {
                let Some(ch) = self.channels.iter_mut().find(|c| c.join == join && !c.ended) else { return };
                ch.ended = true;
                let topic = ch.topic.clone();
                let r = self.take_ref(Awaiting::Other);
                let jr = join.to_string();
                self.recorder.record(Event::Leave { at: unix_ms(), join });
                let _ = self.ws.send(Message::text(protocol::encode(Some(&jr), &r, &topic, "phx_leave", "{}"))).await;
            }
            Cmd::Push { join } | Cmd::Update { join }
                if !self.channels.iter().any(|c| c.join == join && c.acked && !c.ended) => {}
            Cmd::Push { join } => {
                let topic = self.topic_of(join);
                let r = self.take_ref(Awaiting::Other);
                let jr = join.to_string();
                let _ = self
                    .ws
                    .send(Message::text(protocol::encode(Some(&jr), &r, &topic, "shout", r#"{"text":"hi"}"#)))
                    .await;
            }
            Cmd::Update { join } => {
                let topic = self.topic_of(join);
                let r = self.take_ref(Awaiting::Other);
                let jr = join.to_string();
                let payload = serde_json::json!({"c": join, "status": r}).to_string();
                let _ = self
                    .ws
                    .send(Message::text(protocol::encode(Some(&jr), &r, &topic, "presence:update", &payload)))
                    .await;
            }
            Cmd::Snapshot(tx) => {
                let views = self
                    .channels
                    .iter()
                    .filter(|c| c.acked && !c.ended && c.view.synced)
                    .map(|c| ViewSnap { join: c.join, topic: c.topic.clone(), metas: c.view.metas() })
                    .collect();
                let _ = tx.send(views);
            }
            Cmd::Close | Cmd::Drop | Cmd::Stall => unreachable!("handled by serve"),
        }
    }

    fn topic_of(&self, join: u32) -> String {
        self.channels.iter().find(|c| c.join == join).map(|c| c.topic.clone()).unwrap_or_default()
    }

    fn take_ref(&mut self, awaiting: Awaiting) -> String {
        let r = self.next_ref;
        self.next_ref += 1;
        self.replies.insert(r, awaiting);
        r.to_string()
    }

    /// The socket ended: every channel still open ends with it (no event of its own).
    fn end_channels(&mut self, _why: &str) {
        for ch in &mut self.channels {
            ch.ended = true;
        }
    }

    fn on_text(&mut self, text: &str) {
        let Ok(frame) = Incoming::parse(text) else { return };
        let at = unix_ms();
        match frame.event() {
            "phx_reply" => {
                let Some(r) = frame.msg_ref().and_then(|r| r.parse::<u64>().ok()) else { return };
                let Some(Awaiting::Join(join)) = self.replies.remove(&r) else { return };
                let (ok, detail) = match protocol::reply_status(frame.payload()) {
                    Ok(ReplyStatus::Ok) => {
                        let v: Value = serde_json::from_str(frame.payload()).unwrap_or(Value::Null);
                        (true, v["response"]["slot"]["token"].as_str().map(str::to_owned))
                    }
                    Ok(ReplyStatus::Error(reason)) => (false, Some(reason)),
                    Ok(ReplyStatus::Other(s)) => (false, Some(format!("status {s}"))),
                    Err(e) => (false, Some(format!("bad reply: {e}"))),
                };
                if let Some(ch) = self.channels.iter_mut().find(|c| c.join == join) {
                    if ok {
                        ch.acked = true;
                    } else {
                        ch.ended = true;
                    }
                }
                self.recorder.record(Event::Reply { at, join, ok, detail });
            }
            "presence_state" | "presence_diff" => {
                let Some(join) = frame.join_ref().and_then(|r| r.parse::<u32>().ok()) else { return };
                let Some(ch) = self.channels.iter_mut().find(|c| c.join == join && !c.ended) else { return };
                let Ok(payload) = serde_json::from_str::<Value>(frame.payload()) else { return };
                let before = ch.view.cs();
                if frame.event() == "presence_state" {
                    ch.view.sync_state(&payload);
                } else {
                    ch.view.sync_diff(payload);
                }
                let after = ch.view.cs();
                if before != after {
                    let add = after.difference(&before).copied().collect();
                    let del = before.difference(&after).copied().collect();
                    self.recorder.record(Event::View { at, join, add, del });
                }
            }
            "slot_revoked" | "phx_close" | "phx_error" => {
                let Some(join) = frame.join_ref().and_then(|r| r.parse::<u32>().ok()) else { return };
                let Some(ch) = self.channels.iter_mut().find(|c| c.join == join) else { return };
                let first = !ch.ended;
                ch.ended = true;
                // A leave's own phx_close is not news; a revoke then its phx_close is one end.
                if first {
                    let how = if frame.event() == "slot_revoked" {
                        let v: Value = serde_json::from_str(frame.payload()).unwrap_or(Value::Null);
                        format!("slot_revoked {}", v["reason"].as_str().unwrap_or("?"))
                    } else {
                        frame.event().to_owned()
                    };
                    self.recorder.record(Event::ChannelEnd { at, join, how });
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(key: &str, r: &str, c: u32) -> MetaObs {
        MetaObs { key: key.into(), phx_ref: r.into(), c: Some(c) }
    }

    #[test]
    fn a_view_follows_phoenix_js_sync_state_and_sync_diff() {
        let mut v = PresenceView::default();
        // A diff before the state waits for it.
        v.sync_diff(json!({"joins": {"u2": {"metas": [{"phx_ref": "r2", "c": 2}]}}, "leaves": {}}));
        assert!(v.metas().is_empty());
        v.sync_state(&json!({"u1": {"metas": [{"phx_ref": "r1", "c": 1}]}}));
        assert_eq!(v.metas(), vec![meta("u1", "r1", 1), meta("u2", "r2", 2)]);
        // An update: the new meta joins, the old one leaves; the key stays.
        v.sync_diff(json!({"joins": {"u1": {"metas": [{"phx_ref": "r1b", "c": 1}]}},
                           "leaves": {"u1": {"metas": [{"phx_ref": "r1", "c": 1}]}}}));
        assert_eq!(v.metas(), vec![meta("u1", "r1b", 1), meta("u2", "r2", 2)]);
        assert_eq!(v.cs(), BTreeSet::from([1, 2]));
        v.sync_diff(json!({"joins": {}, "leaves": {"u2": {"metas": [{"phx_ref": "r2"}]}}}));
        assert_eq!(v.cs(), BTreeSet::from([1]));
        assert!(!v.state.contains_key("u2"), "a key whose last meta left is gone");
        // The anonymous count has no `c`.
        v.sync_state(&json!({"anonymous": {"metas": [{"phx_ref": "a1", "count": 3}]}}));
        assert_eq!(v.metas(), vec![MetaObs { key: "anonymous".into(), phx_ref: "a1".into(), c: None }]);
        assert!(v.cs().is_empty());
    }
}
