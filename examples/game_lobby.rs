//! A game backend embedding Roster with one *global* slot per player: a player's lobby and
//! match channels share one slot, and logging in from a second device kicks the first, which
//! is told why.
//!
//! Each player also has a *user actor* (`Player`): one activation per player with a live
//! session, on the player's home node, reached from any node with `node.user(id)`. It keeps
//! the player's ready state and a chat rate limit, hears of every session start and end, and
//! outlives a device switch (the player stays online, so the same activation goes on).
//!
//! `cargo run --example game_lobby`

use roster::core::{Config, NodeName, SessionEnd, SessionStart, SessionView};
use roster::{ConnEvent, Node, NodeOptions, UserBehaviour, UserCtx};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
[[cluster.nodes]]
name = "game"
cluster_addr = "127.0.0.1:4370"
http_addr = "127.0.0.1:4000"

[[policy]]
topic = "game:*"
scope = "global"           # one slot across every game:* topic
on_conflict = "takeover"   # the newest login wins
"#;

/// Chat messages a player may send per second, with bursts up to this many.
const CHAT_PER_SECOND: f64 = 2.0;
const CHAT_BURST: f64 = 3.0;

/// The per-player actor.
struct Player;

/// What it keeps per player: handed over with the player if its home node changes.
#[derive(Serialize, Deserialize)]
struct PlayerState {
    ready: bool,
    /// The chat rate limit: a token bucket (tokens, and when it was last refilled).
    chat_tokens: f64,
    #[serde(skip, default = "Instant::now")]
    refilled: Instant,
    /// Devices this player used in this activation.
    logins: u32,
}

#[derive(Serialize, Deserialize)]
enum PlayerMsg {
    SetReady(bool),
    Chat(String),
    Status,
}

#[derive(Debug, Serialize, Deserialize)]
enum PlayerReply {
    Ok,
    /// Too many chat messages: try again later.
    RateLimited,
    Status {
        ready: bool,
        logins: u32,
        devices_online: usize,
        token: String,
    },
}

impl UserBehaviour for Player {
    type State = PlayerState;
    type Msg = PlayerMsg;
    type Reply = PlayerReply;

    fn start(&self, ctx: &UserCtx, handed_over: Option<PlayerState>) -> PlayerState {
        println!(
            "  [{}] actor starts (token {}), {}",
            ctx.user(),
            ctx.token(),
            match &handed_over {
                Some(_) => "with the state its previous home handed over",
                None => "fresh",
            }
        );
        let logins = ctx.sessions().len() as u32;
        handed_over.unwrap_or(PlayerState { ready: false, chat_tokens: CHAT_BURST, refilled: Instant::now(), logins })
    }

    fn session_started(&self, ctx: &UserCtx, state: &mut PlayerState, session: &SessionView, how: SessionStart) {
        state.logins += 1;
        println!("  [{}] session {how:?} on {:?}", ctx.user(), session.tab);
    }

    fn session_ended(&self, ctx: &UserCtx, state: &mut PlayerState, session: &SessionView, end: &SessionEnd) {
        // A device that lost its slot is not ready to play any more.
        state.ready = false;
        println!("  [{}] session on {:?} ended: {end:?}", ctx.user(), session.tab);
    }

    async fn handle(&self, ctx: &UserCtx, state: &mut PlayerState, msg: PlayerMsg) -> PlayerReply {
        match msg {
            PlayerMsg::SetReady(ready) => {
                state.ready = ready;
                PlayerReply::Ok
            }
            PlayerMsg::Chat(_text) => {
                let now = Instant::now();
                let elapsed = now.duration_since(state.refilled).as_secs_f64();
                state.chat_tokens = (state.chat_tokens + elapsed * CHAT_PER_SECOND).min(CHAT_BURST);
                state.refilled = now;
                if state.chat_tokens < 1.0 {
                    return PlayerReply::RateLimited;
                }
                state.chat_tokens -= 1.0;
                PlayerReply::Ok
            }
            PlayerMsg::Status => PlayerReply::Status {
                ready: state.ready,
                logins: state.logins,
                devices_online: ctx.sessions().len(),
                token: ctx.token().to_string(),
            },
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_toml_str(CONFIG)?;
    let data_dir = std::env::temp_dir().join("roster-game-lobby");
    let opts = NodeOptions::for_node(config, NodeName::from("game")).data_dir(data_dir).users(Player);
    let node = Node::start(opts).await?;
    let outbound = 64;

    // Device A: one socket, one tab, two channels sharing the player's one global slot.
    let mut console = node.connect(Some("player-1".into()), None, outbound).await?;
    let lobby = console.join("game:lobby", Some("console".into()), Default::default()).await?;
    let game = console.join("game:match-7", Some("console".into()), Default::default()).await?;
    println!("player-1 on the console: lobby slot {:?}, match slot {:?} (shared)", lobby.token, game.token);

    // The backend talks to the player's actor, from whichever node it runs on.
    let player = node.user("player-1");
    player.call::<Player>(PlayerMsg::SetReady(true)).await?;
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(player.call::<Player>(PlayerMsg::Chat(format!("gg {i}"))).await?);
    }
    println!("five chat messages at once: {sent:?} (a burst of {CHAT_BURST}, then {CHAT_PER_SECOND}/s)");
    println!("status: {:?}", player.call::<Player>(PlayerMsg::Status).await?);

    // Device B: a new login of the same player.
    let mut handheld = node.connect(Some("player-1".into()), None, outbound).await?;
    let joined = handheld.join("game:lobby", Some("handheld".into()), Default::default()).await?;
    println!("player-1 logs in on the handheld: slot {:?}", joined.token);

    let mut kicked = Vec::new();
    while kicked.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(5), console.recv()).await?.ok_or("console closed")?;
        if let ConnEvent::Revoked { topic, reason } = event {
            println!("console kicked from {topic}: {reason}");
            kicked.push(topic);
        }
    }
    // The same actor went on through the switch: it saw both devices and reset `ready`.
    println!("status after the switch: {:?}", player.call::<Player>(PlayerMsg::Status).await?);
    let info = player.info().await?;
    println!("player-1's home {}, activation {:?}, {} session(s)", info.home, info.activation, info.sessions.len());
    let list = node.presence("game:lobby").current().await;
    println!("game:lobby now: {}", serde_json::to_string(&*list)?);
    drop(handheld.try_recv());
    node.shutdown().await;
    Ok(())
}
