//! One simulated client: a tokio task that owns one WebSocket, joins its topics when the
//! coordinator's stage says so, keeps a [`View`] per topic, and publishes what it sees on the
//! [`Board`].
//!
//! The task reads its socket all the time and takes each read's bytes as they come
//! ([`wire::FrameReader`]): a ping is answered as soon as the read that holds it has been
//! gone through (one read is at most 64 KiB), also between the fragments of a long message,
//! and a text message is parsed fragment by fragment into the ids of its metas
//! ([`MessageParser`]) without the message ever being held whole. The node writes a socket
//! only a window beyond its last answered ping, so a client that sat on a 1 MB
//! `presence_state` until it had all of it would stall its own socket. A message whose
//! `join_ref` names an earlier join of its topic is dropped, as phoenix.js's
//! `Channel.isMember` drops it.

use crate::load::board::{Board, Membership, SocketState, NO_CLOSE_FRAME, NO_STATUS};
use crate::load::message::{Body, Message, MessageError, MessageParser};
use crate::load::protocol::{self, ReplyStatus};
use crate::load::view::{meta_id, View};
use crate::load::wire::{self, FrameReader, Piece};
use crate::load::CloseMode;
use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Control, Data};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// How long a connect (TCP and WebSocket handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a closing socket waits for the server's close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the sockets get to close at the end.
pub(crate) const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);
/// One read's most bytes; the buffer is the thread's, shared by all its sockets.
const READ_BYTES: usize = 64 * 1024;
/// Reads one socket takes in a row before the other tasks get their turn.
const READS_PER_TURN: usize = 4;

thread_local! {
    static READ_BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_BYTES]);
}

/// What the coordinator tells every client, in this order; a client acts on every stage up
/// to the current one, so it never misses one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Stage {
    Connect,
    /// Watchers join, spread from `at` as their offsets say.
    JoinWatchers {
        at: Instant,
    },
    /// Members join, likewise.
    JoinMembers {
        at: Instant,
    },
    /// The sockets chosen to go close (or leave), spread from `at` as their offsets say.
    Close {
        at: Instant,
    },
    /// Everyone closes.
    Shutdown,
}

impl Stage {
    /// Where the stage sits in the order above.
    fn rank(&self) -> u8 {
        match self {
            Stage::Connect => 0,
            Stage::JoinWatchers { .. } => 1,
            Stage::JoinMembers { .. } => 2,
            Stage::Close { .. } => 3,
            Stage::Shutdown => 4,
        }
    }

    /// Whether this stage is `other`'s kind or a later one.
    fn reached(&self, other: Stage) -> bool {
        self.rank() >= other.rank()
    }
}

/// What every client shares.
pub(crate) struct ClientEnv {
    pub board: Arc<Board>,
    pub addr: SocketAddr,
    pub heartbeat: Duration,
    pub close_mode: CloseMode,
    /// Bounds the connects in flight, so a burst does not overflow the listen backlog.
    pub connect_gate: Semaphore,
}

/// One client's part in the run.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct ClientSpec {
    /// Its socket on the board.
    pub socket: usize,
    pub token: String,
    /// The `phx_join` payload (JSON).
    pub join_payload: Arc<str>,
    pub source: Option<Ipv4Addr>,
    /// `(membership on the board, topic)` of every topic it joins.
    pub topics: Vec<(usize, Arc<str>)>,
    pub watcher: bool,
    /// Whether it is among the sockets that close (or leave) at [`Stage::Close`].
    pub closes: bool,
    /// When it sends its joins, after its join stage starts (`--join-rate`).
    pub join_offset: Duration,
    /// When it closes, after the close stage starts (`--close-rate`).
    #[serde(default)]
    pub close_offset: Duration,
}

/// Run one client until its socket ends.
pub(crate) async fn run(spec: ClientSpec, env: Arc<ClientEnv>, mut stages: watch::Receiver<Stage>) {
    let board = env.board.clone();
    let cell = &board.sockets[spec.socket];
    let connected = {
        let _permit = env.connect_gate.acquire().await;
        connect(&env, &spec).await
    };
    let (stream, tail) = match connected {
        Ok((stream, source, tail)) => {
            cell.source_ip.store(source.into(), Relaxed);
            cell.opened_us.store(board.now_us(), Relaxed);
            cell.set_state(SocketState::Open);
            (stream, tail)
        }
        Err(e) => {
            board.tally(format!("connect failed: {e}"));
            cell.set_state(SocketState::Failed);
            return;
        }
    };
    let channels = spec.topics.iter().map(|(m, t)| Channel::new(*m, t.clone())).collect();
    let mut client = Client {
        spec,
        env,
        board: board.clone(),
        stream,
        frames: FrameReader::default(),
        parser: MessageParser::new(meta_id),
        reading: None,
        channels,
        next_ref: 1,
        replies: Vec::new(),
    };
    client.serve(&mut stages, tail).await;
}

/// The socket open, its source address, and the bytes the server sent after the handshake.
async fn connect(env: &ClientEnv, spec: &ClientSpec) -> Result<(TcpStream, Ipv4Addr, Vec<u8>), String> {
    let attempt = async {
        let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
        if let Some(ip) = spec.source {
            socket.bind(SocketAddrV4::new(ip, 0).into()).map_err(|e| format!("bind {ip}: {e}"))?;
        }
        let stream = socket.connect(env.addr).await.map_err(|e| e.to_string())?;
        // Small frames (joins, pongs) must not wait for a delayed ACK.
        let _ = stream.set_nodelay(true);
        let source = match stream.local_addr() {
            Ok(SocketAddr::V4(a)) => *a.ip(),
            _ => Ipv4Addr::UNSPECIFIED,
        };
        let url = format!("ws://{}/socket/websocket?vsn=2.0.0&token={}", env.addr, spec.token);
        let tail = wire::handshake(&stream, &url).await.map_err(|e| format!("handshake: {e}"))?;
        Ok((stream, source, tail))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, attempt).await.unwrap_or_else(|_| Err("timed out".to_owned()))
}

/// One topic the client joins.
struct Channel {
    membership: usize,
    topic: Arc<str>,
    /// The `join_ref` of its current join.
    join_ref: Option<String>,
    view: View,
    /// This client left it (`phx_leave`): its `phx_close` is expected.
    leaving: bool,
}

impl Channel {
    fn new(membership: usize, topic: Arc<str>) -> Channel {
        Channel { membership, topic, join_ref: None, view: View::default(), leaving: false }
    }
}

/// What a reply answers.
#[derive(Clone, Copy)]
enum Awaiting {
    Join(usize),
    Leave,
    Heartbeat,
}

struct Client {
    spec: ClientSpec,
    env: Arc<ClientEnv>,
    board: Arc<Board>,
    stream: TcpStream,
    frames: FrameReader,
    parser: MessageParser,
    /// The data message being read: text (parsed) or binary (skipped).
    reading: Option<Data>,
    channels: Vec<Channel>,
    next_ref: u64,
    /// `(ref, what it answers)` of requests not answered yet.
    replies: Vec<(u64, Awaiting)>,
}

/// Why the socket loop ended.
enum End {
    /// The server closed it (with this code; 1005 and 1006 included).
    ByServer(u16),
    /// This client closed it, or its close handshake ended.
    ByClient,
}

impl Client {
    async fn serve(&mut self, stages: &mut watch::Receiver<Stage>, tail: Vec<u8>) {
        let idx = self.spec.socket;
        let mut answers = Vec::new();
        let early = self.on_bytes(&tail, false, &mut answers);
        self.write(&answers).await;
        let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        let mut join_at: Option<Instant> = None;
        let mut joined = false;
        let mut closing = false;
        let mut close_deadline = far;
        // When this client closes (or leaves), and how.
        let mut close_due: Option<(Instant, CloseMode)> = None;
        let board = self.board.clone();
        let cell = &board.sockets[idx];
        let mut heartbeat = tokio::time::interval_at(Instant::now() + self.env.heartbeat, self.env.heartbeat);
        let mut stage = *stages.borrow_and_update();
        let mut stage_seen = false;
        let end = loop {
            if let Some(end) = early {
                break end;
            }
            if !stage_seen {
                stage_seen = true;
                let now = Instant::now();
                let my_join =
                    if self.spec.watcher { Stage::JoinWatchers { at: now } } else { Stage::JoinMembers { at: now } };
                if !joined && stage.reached(my_join) {
                    joined = true;
                    // The stage's own start when it is this client's join stage; at once when
                    // the client only got there after it (it never happens in a run: the
                    // coordinator waits for every socket first).
                    let start = match stage {
                        Stage::JoinWatchers { at } | Stage::JoinMembers { at } if stage.rank() == my_join.rank() => at,
                        _ => now,
                    };
                    join_at = Some(start + self.spec.join_offset);
                }
                let my_close = if self.spec.closes { Stage::Close { at: now } } else { Stage::Shutdown };
                if !closing && stage.reached(my_close) {
                    close_due = Some(match stage {
                        Stage::Close { at } => (at + self.spec.close_offset, self.env.close_mode),
                        _ => (now, CloseMode::Frame),
                    });
                }
            }
            if let Some((_, mode)) = close_due.filter(|(at, _)| *at <= Instant::now()) {
                close_due = None;
                if mode == CloseMode::Leave {
                    self.leave_all().await;
                    // Leaving keeps the socket; it still closes at shutdown.
                    self.spec.closes = false;
                    cell.close_sent_us.store(self.board.now_us(), Relaxed);
                } else {
                    self.forget_all();
                    if mode == CloseMode::Drop {
                        // The connection ends when the task does, right after.
                        cell.close_sent_us.store(self.board.now_us(), Relaxed);
                        break End::ByClient;
                    }
                    closing = true;
                    close_deadline = Instant::now() + CLOSE_TIMEOUT;
                    let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
                    let sent = self.stream.write_all(&wire::client_frame(Frame::close(Some(frame)))).await;
                    cell.close_sent_us.store(self.board.now_us(), Relaxed);
                    if sent.is_err() {
                        break End::ByClient;
                    }
                }
            }
            tokio::select! {
                ready = self.stream.readable() => {
                    if ready.is_err() {
                        break if closing { End::ByClient } else { End::ByServer(NO_CLOSE_FRAME) };
                    }
                    if let Some(end) = self.on_readable(closing).await {
                        break end;
                    }
                }
                changed = stages.changed(), if !closing => {
                    if changed.is_err() {
                        break End::ByClient;
                    }
                    let next = *stages.borrow_and_update();
                    if next != stage {
                        stage = next;
                        stage_seen = false;
                    }
                }
                _ = tokio::time::sleep_until(join_at.unwrap_or(far)), if join_at.is_some() => {
                    join_at = None;
                    self.join_all().await;
                }
                _ = heartbeat.tick(), if !closing => self.heartbeat().await,
                _ = tokio::time::sleep_until(close_deadline), if closing => break End::ByClient,
                _ = tokio::time::sleep_until(close_due.map_or(far, |d| d.0)), if close_due.is_some() && !closing => {}
            }
        };
        let cell = &self.board.sockets[idx];
        if let End::ByServer(code) = end {
            cell.server_close.store(code, Relaxed);
            for ch in &self.channels {
                self.board.move_membership(
                    ch.membership,
                    &[Membership::Joining, Membership::Joined],
                    Membership::Ended,
                );
            }
        }
        cell.set_state(SocketState::Closed);
    }

    /// Read what the socket has (a few reads at most), then send what that called for
    /// (pongs, the answer to a close). `Some` when the socket ended.
    async fn on_readable(&mut self, closing: bool) -> Option<End> {
        let mut answers = Vec::new();
        let mut end = None;
        for _ in 0..READS_PER_TURN {
            let read = READ_BUFFER.with(|buffer| {
                let mut buffer = buffer.borrow_mut();
                match self.stream.try_read(&mut buffer[..]) {
                    Ok(0) => Err(Some(if closing { End::ByClient } else { End::ByServer(NO_CLOSE_FRAME) })),
                    Ok(n) => Ok(self.on_bytes(&buffer[..n], closing, &mut answers)),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(None),
                    Err(_) => Err(Some(if closing { End::ByClient } else { End::ByServer(NO_CLOSE_FRAME) })),
                }
            });
            match read {
                Ok(None) => {}
                Ok(Some(ended)) | Err(Some(ended)) => {
                    end = Some(ended);
                    break;
                }
                Err(None) => break,
            }
        }
        self.write(&answers).await;
        end
    }

    /// Go through the bytes of one read: frames, pings (their pongs appended to `answers`),
    /// message fragments fed to the parser, whole messages acted on. `Some` when the socket
    /// ended: a close frame (answered in `answers` when the server started it) or a frame the
    /// server must not send.
    fn on_bytes(&mut self, mut input: &[u8], closing: bool, answers: &mut Vec<u8>) -> Option<End> {
        let board = self.board.clone();
        let cell = &board.sockets[self.spec.socket];
        loop {
            let piece = match self.frames.next(&mut input) {
                Ok(Some(piece)) => piece,
                Ok(None) => return None,
                Err(e) => {
                    self.board.tally(e.to_string());
                    return Some(if closing { End::ByClient } else { End::ByServer(NO_CLOSE_FRAME) });
                }
            };
            match piece {
                Piece::Start { opcode, .. } => match (self.reading, opcode) {
                    (None, Data::Text) => {
                        self.parser.begin();
                        self.reading = Some(Data::Text);
                    }
                    (None, Data::Binary) => self.reading = Some(Data::Binary),
                    (Some(_), Data::Continue) => {}
                    _ => {
                        self.board.tally("WebSocket protocol error: a fragment out of order");
                        return Some(if closing { End::ByClient } else { End::ByServer(NO_CLOSE_FRAME) });
                    }
                },
                Piece::Payload(bytes) => {
                    if self.reading == Some(Data::Text) {
                        cell.bytes_in.fetch_add(bytes.len() as u64, Relaxed);
                        self.parser.feed(bytes);
                    }
                }
                Piece::End { fin: false } => {}
                Piece::End { fin: true } => match self.reading.take() {
                    Some(Data::Text) => {
                        cell.frames_in.fetch_add(1, Relaxed);
                        let message = self.parser.finish();
                        self.on_message(message);
                    }
                    _ => self.board.tally("binary messages (skipped)"),
                },
                Piece::Control { opcode: Control::Ping, payload } => {
                    cell.pings.fetch_add(1, Relaxed);
                    answers.extend(wire::client_frame(Frame::pong(payload)));
                }
                Piece::Control { opcode: Control::Close, payload } => {
                    if closing {
                        return Some(End::ByClient);
                    }
                    let code = match payload.as_slice() {
                        [] => NO_STATUS,
                        [a, b, ..] => u16::from_be_bytes([*a, *b]),
                        [_] => NO_CLOSE_FRAME,
                    };
                    let echo =
                        (code != NO_STATUS).then(|| CloseFrame { code: CloseCode::from(code), reason: "".into() });
                    answers.extend(wire::client_frame(Frame::close(echo)));
                    return Some(End::ByServer(code));
                }
                Piece::Control { .. } => {}
            }
        }
    }

    /// Send bytes already framed; a failed send ends nothing here (the read side sees the
    /// socket end).
    async fn write(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            let _ = self.stream.write_all(bytes).await;
        }
    }

    /// Send a text frame.
    async fn send(&mut self, text: String) {
        let cell = &self.board.sockets[self.spec.socket];
        cell.frames_out.fetch_add(1, Relaxed);
        cell.bytes_out.fetch_add(text.len() as u64, Relaxed);
        let frame = wire::text_frame(text);
        self.write(&frame).await;
    }

    fn take_ref(&mut self, awaiting: Awaiting) -> String {
        let r = self.next_ref;
        self.next_ref += 1;
        self.replies.push((r, awaiting));
        r.to_string()
    }

    async fn join_all(&mut self) {
        for i in 0..self.channels.len() {
            let msg_ref = self.take_ref(Awaiting::Join(i));
            let ch = &mut self.channels[i];
            ch.join_ref = Some(msg_ref.clone());
            ch.view.rejoin();
            let text = protocol::encode(Some(&msg_ref), &msg_ref, &ch.topic, "phx_join", &self.spec.join_payload);
            let m = ch.membership;
            self.board.memberships[m].sent_us.store(self.board.now_us(), Relaxed);
            self.board.set_membership(m, Membership::Joining);
            self.send(text).await;
        }
    }

    async fn leave_all(&mut self) {
        for i in 0..self.channels.len() {
            let Some(join_ref) = self.channels[i].join_ref.clone() else { continue };
            let msg_ref = self.take_ref(Awaiting::Leave);
            let ch = &mut self.channels[i];
            ch.leaving = true;
            let text = protocol::encode(Some(&join_ref), &msg_ref, &ch.topic, "phx_leave", "{}");
            self.board.move_membership(ch.membership, &[Membership::Joining, Membership::Joined], Membership::Left);
            self.send(text).await;
        }
    }

    /// This client closes its socket: its memberships leave the expected lists at once.
    fn forget_all(&mut self) {
        for ch in &self.channels {
            self.board.move_membership(ch.membership, &[Membership::Joining, Membership::Joined], Membership::Left);
        }
    }

    async fn heartbeat(&mut self) {
        let msg_ref = self.take_ref(Awaiting::Heartbeat);
        self.send(protocol::encode(None, &msg_ref, "phoenix", "heartbeat", "{}")).await;
    }

    fn on_message(&mut self, message: Result<Message, MessageError>) {
        let frame = match message {
            Ok(f) => f,
            Err(MessageError::Presence(_)) => return self.board.tally("presence frames not understood"),
            Err(_) => return self.board.tally("frames not understood"),
        };
        match frame.event.as_str() {
            "phx_reply" => self.on_reply(&frame),
            "presence_state" | "presence_diff" => {
                if let Some(i) = self.channel_for(&frame) {
                    self.on_presence(i, frame);
                }
            }
            "phx_close" | "phx_error" => {
                if let Some(i) = self.channel_for(&frame) {
                    let ch = &self.channels[i];
                    if !(ch.leaving && frame.event == "phx_close") {
                        self.board.tally(format!("channel ended by the server: {}", frame.event));
                        self.board.move_membership(
                            ch.membership,
                            &[Membership::Joining, Membership::Joined],
                            Membership::Ended,
                        );
                    }
                }
            }
            "slot_revoked" => self.board.tally("channel ended by the server: slot_revoked"),
            other => self.board.tally(format!("other events: {other}")),
        }
    }

    /// The channel a server push is for, or `None` (counted) when its topic is not joined
    /// here or its `join_ref` names an earlier join (phoenix's `isMember`).
    fn channel_for(&self, frame: &Message) -> Option<usize> {
        let i = self.channels.iter().position(|c| *c.topic == *frame.topic);
        let Some(i) = i else {
            self.board.tally("pushes for a topic not joined");
            return None;
        };
        match (&frame.join_ref, &self.channels[i].join_ref) {
            (Some(got), Some(current)) if got != current => {
                self.board.tally("pushes for an earlier join (dropped)");
                None
            }
            _ => Some(i),
        }
    }

    fn on_reply(&mut self, frame: &Message) {
        let Some(r) = frame.msg_ref.as_deref().and_then(|r| r.parse::<u64>().ok()) else {
            return self.board.tally("replies to no request");
        };
        let Some(pos) = self.replies.iter().position(|(x, _)| *x == r) else {
            return self.board.tally("replies to no request");
        };
        let (_, awaiting) = self.replies.swap_remove(pos);
        let Awaiting::Join(i) = awaiting else { return };
        let m = self.channels[i].membership;
        self.board.memberships[m].replied_us.store(self.board.now_us(), Relaxed);
        let payload = match &frame.body {
            Body::Raw(raw) => raw.as_str(),
            _ => "",
        };
        match protocol::reply_status(payload) {
            Ok(ReplyStatus::Ok) => self.board.move_membership(m, &[Membership::Joining], Membership::Joined),
            Ok(ReplyStatus::Error(reason)) => {
                self.board.tally(format!("joins refused: {reason}"));
                self.board.move_membership(m, &[Membership::Joining], Membership::Refused);
            }
            Ok(ReplyStatus::Other(_)) | Err(_) => {
                self.board.tally("join replies not understood");
                self.board.move_membership(m, &[Membership::Joining], Membership::Refused);
            }
        }
    }

    fn on_presence(&mut self, i: usize, frame: Message) {
        let ch = &mut self.channels[i];
        let cell = &self.board.memberships[ch.membership];
        let before = ch.view.digest();
        match frame.body {
            Body::State(ids) => {
                cell.state_bytes.fetch_add(frame.payload_len as u64, Relaxed);
                ch.view.sync_state_set(ids);
            }
            Body::Diff { joins, leaves } => {
                cell.diff_bytes.fetch_add(frame.payload_len as u64, Relaxed);
                let anomalies = ch.view.sync_diff(joins, leaves);
                cell.duplicate_joins.fetch_add(anomalies.duplicate_joins, Relaxed);
                cell.unknown_leaves.fetch_add(anomalies.unknown_leaves, Relaxed);
            }
            Body::Raw(_) => return self.board.tally("presence frames not understood"),
        }
        cell.size.store(ch.view.len() as u32, Relaxed);
        if ch.view.digest() != before {
            cell.digest.store(ch.view.digest(), Relaxed);
            cell.changed_us.store(self.board.now_us(), Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::WebSocketStream;

    /// A client of one topic against a fake server `serve`, driven to the members' join
    /// stage; returns the board once the client's socket has ended.
    async fn against<F, Fut>(serve: F, stage: Stage) -> Arc<Board>
    where
        F: FnOnce(Ws) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            serve(tokio_tungstenite::accept_async(tcp).await.unwrap()).await;
        });
        let board = Arc::new(Board::new(1, 1));
        let env = Arc::new(ClientEnv {
            board: board.clone(),
            addr,
            heartbeat: Duration::from_secs(30),
            close_mode: CloseMode::Frame,
            connect_gate: Semaphore::new(1),
        });
        let spec = ClientSpec {
            socket: 0,
            token: "t".into(),
            join_payload: "{}".into(),
            source: None,
            topics: vec![(0, "room:1".into())],
            watcher: false,
            closes: false,
            join_offset: Duration::ZERO,
            close_offset: Duration::ZERO,
        };
        let (stages, rx) = watch::channel(stage);
        let client = tokio::spawn(run(spec, env, rx));
        tokio::time::timeout(Duration::from_secs(10), client).await.expect("the client ended").unwrap();
        drop(stages);
        server.await.unwrap();
        board
    }

    type Ws = WebSocketStream<TcpStream>;

    fn close(code: u16) -> Message {
        Message::Close(Some(CloseFrame { code: CloseCode::from(code), reason: "bye".into() }))
    }

    #[tokio::test]
    async fn a_close_frame_from_the_server_is_counted_by_its_code_and_ends_the_membership() {
        let board = against(
            |mut ws: Ws| async move {
                let _join = ws.next().await;
                ws.send(close(1013)).await.unwrap();
                while ws.next().await.is_some() {}
            },
            Stage::JoinMembers { at: Instant::now() },
        )
        .await;
        assert_eq!(board.sockets[0].server_close.load(Relaxed), 1013);
        assert_eq!(board.sockets[0].state(), SocketState::Closed);
        assert_eq!(board.memberships[0].state(), Membership::Ended);
    }

    #[tokio::test]
    async fn a_close_frame_without_a_code_is_1005_and_no_close_frame_is_1006() {
        let board = against(
            |mut ws: Ws| async move {
                ws.send(Message::Close(None)).await.unwrap();
                while ws.next().await.is_some() {}
            },
            Stage::Connect,
        )
        .await;
        assert_eq!(board.sockets[0].server_close.load(Relaxed), NO_STATUS);
        let board = against(|ws: Ws| async move { drop(ws) }, Stage::Connect).await;
        assert_eq!(board.sockets[0].server_close.load(Relaxed), NO_CLOSE_FRAME);
    }

    #[tokio::test]
    async fn pings_are_answered_while_the_client_waits_for_its_stage() {
        let board = against(
            |mut ws: Ws| async move {
                ws.send(Message::Ping(b"p1".to_vec().into())).await.unwrap();
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Pong(p))) => {
                            assert_eq!(&p[..], b"p1");
                            break;
                        }
                        Some(Ok(_)) => {}
                        other => panic!("no pong: {other:?}"),
                    }
                }
                ws.send(close(1000)).await.unwrap();
                while ws.next().await.is_some() {}
            },
            Stage::Connect,
        )
        .await;
        assert_eq!(board.sockets[0].pings.load(Relaxed), 1);
        assert_eq!(board.sockets[0].server_close.load(Relaxed), 1000);
    }

    #[tokio::test]
    async fn a_fragmented_state_is_parsed_as_it_comes_and_a_ping_between_its_fragments_is_answered_first() {
        use tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode;
        let board = against(
            |mut ws: Ws| async move {
                let Some(Ok(Message::Text(join))) = ws.next().await else { panic!("no join") };
                let join: serde_json::Value = serde_json::from_str(join.as_str()).unwrap();
                let jr = join[0].as_str().unwrap().to_owned();
                ws.send(Message::text(format!(
                    r#"["{jr}","{jr}","room:1","phx_reply",{{"status":"ok","response":{{}}}}]"#
                )))
                .await
                .unwrap();
                // 300 members, "ü" in every key: cut into fragments of 7 bytes, which fall
                // inside strings and inside the two-byte "ü".
                let entries: Vec<String> =
                    (0..300).map(|i| format!(r#""ü{i}":{{"metas":[{{"phx_ref":"r{i}"}}]}}"#)).collect();
                let text = format!(r#"["{jr}",null,"room:1","presence_state",{{{}}}]"#, entries.join(","));
                let chunks: Vec<&[u8]> = text.as_bytes().chunks(7).collect();
                let last = chunks.len() - 1;
                for (i, chunk) in chunks.into_iter().enumerate() {
                    let opcode = if i == 0 { OpCode::Data(Data::Text) } else { OpCode::Data(Data::Continue) };
                    ws.send(Message::Frame(Frame::message(chunk.to_vec(), opcode, i == last))).await.unwrap();
                    if i == 1 {
                        // A ping in the middle of the message: its pong comes before the rest.
                        ws.send(Message::Ping(b"mid".to_vec().into())).await.unwrap();
                        match ws.next().await {
                            Some(Ok(Message::Pong(p))) => assert_eq!(&p[..], b"mid"),
                            other => panic!("not the pong: {other:?}"),
                        }
                    }
                }
                ws.send(close(1012)).await.unwrap();
                while ws.next().await.is_some() {}
            },
            Stage::JoinMembers { at: Instant::now() },
        )
        .await;
        let cell = &board.memberships[0];
        let want = View::digest_of((0..300).map(|i| meta_id(&format!("ü{i}"), &format!("r{i}"))));
        assert_eq!((cell.digest.load(Relaxed), cell.size.load(Relaxed)), (want, 300));
        assert_eq!(board.sockets[0].pings.load(Relaxed), 1);
        // The reply and the state: two messages, whatever their fragments.
        assert_eq!(board.sockets[0].frames_in.load(Relaxed), 2);
        assert_eq!(board.tallies(), Default::default());
    }

    #[tokio::test]
    async fn a_join_is_acked_and_its_view_follows_state_and_diffs_but_not_an_earlier_joins_push() {
        let board = against(
            |mut ws: Ws| async move {
                let Some(Ok(Message::Text(join))) = ws.next().await else { panic!("no join") };
                let join: serde_json::Value = serde_json::from_str(join.as_str()).unwrap();
                assert_eq!((&join[2], &join[3], &join[0]), (&"room:1".into(), &"phx_join".into(), &join[1]));
                let jr = join[0].as_str().unwrap().to_owned();
                let frames = [
                    format!(r#"["{jr}","{jr}","room:1","phx_reply",{{"status":"ok","response":{{}}}}]"#),
                    format!(r#"["{jr}",null,"room:1","presence_state",{{"u0":{{"metas":[{{"phx_ref":"a"}}]}}}}]"#),
                    r#"[null,null,"room:1","presence_diff",{"joins":{"u1":{"metas":[{"phx_ref":"b"}]}},"leaves":{}}]"#.into(),
                    r#"["999",null,"room:1","presence_diff",{"joins":{"u9":{"metas":[{"phx_ref":"z"}]}},"leaves":{}}]"#.into(),
                    format!(r#"["{jr}",null,"room:1","presence_diff",{{"joins":{{}},"leaves":{{"u0":{{"metas":[{{"phx_ref":"a"}}]}}}}}}]"#),
                ];
                for f in frames {
                    ws.send(Message::text(f)).await.unwrap();
                }
                ws.send(close(1012)).await.unwrap();
                while ws.next().await.is_some() {}
            },
            Stage::JoinMembers { at: Instant::now() },
        )
        .await;
        let cell = &board.memberships[0];
        assert_eq!(cell.digest.load(Relaxed), meta_id("u1", "b"));
        assert_eq!(cell.size.load(Relaxed), 1);
        assert!(cell.replied_us.load(Relaxed) >= cell.sent_us.load(Relaxed));
        assert!(cell.changed_us.load(Relaxed) > 0);
        assert_eq!(board.tallies().get("pushes for an earlier join (dropped)"), Some(&1));
        assert_eq!(board.sockets[0].frames_in.load(Relaxed), 5);
        assert_eq!(board.sockets[0].server_close.load(Relaxed), 1012);
        // Joined, then the server closed the socket.
        assert_eq!(cell.state(), Membership::Ended);
    }
}
