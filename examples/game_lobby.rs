//! A game backend embedding Roster with one *global* slot per player: a player's lobby and
//! match channels share one slot, and logging in from a second device kicks the first, which
//! is told why.
//!
//! `cargo run --example game_lobby`

use roster::core::{Config, NodeName};
use roster::{ConnEvent, Node, NodeOptions};
use std::time::Duration;

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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_toml_str(CONFIG)?;
    let data_dir = std::env::temp_dir().join("roster-game-lobby");
    let node = Node::start(NodeOptions::for_node(config, NodeName::from("game")).data_dir(data_dir)).await?;
    let outbound = 64;

    // Device A: one socket, one tab, two channels sharing the player's one global slot.
    let mut console = node.connect(Some("player-1".into()), None, outbound).await?;
    let lobby = console.join("game:lobby", Some("console".into()), Default::default()).await?;
    let game = console.join("game:match-7", Some("console".into()), Default::default()).await?;
    println!("player-1 on the console: lobby slot {:?}, match slot {:?} (shared)", lobby.token, game.token);

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
    let list = node.presence("game:lobby").current().await;
    println!("game:lobby now: {}", serde_json::to_string(&*list)?);
    drop(handheld.try_recv());
    node.shutdown().await;
    Ok(())
}
