//! A scripted two-tab takeover, run through the core's slot policy: what a user sees when a
//! second tab logs in under the default policy (newest wins), then when the first tab resumes.
//!
//! `cargo run --example two_tabs`

use roster::core::{ConnId, Incarnation, ScopeSlots, SlotEffect, SlotRules, SocketId, TabId, TokenMint};

fn show(step: &str, effects: &[SlotEffect]) {
    println!("{step}");
    for e in effects {
        match e {
            SlotEffect::Grant { conn, token, resumed, .. } => {
                println!("  -> {conn} granted slot {token}{}", if *resumed { " (resumed)" } else { "" })
            }
            SlotEffect::Reject { conn, reason } => println!("  -> {conn} rejected: {}", reason.as_str()),
            SlotEffect::Revoke { conn, token, reason } => {
                println!(
                    "  -> {conn} told slot_revoked ({}) for {token}; the new tab waits for its confirmation",
                    reason.as_str()
                )
            }
            SlotEffect::Close { conn, token } => {
                println!("  -> {conn} closed quietly ({token} resumed elsewhere)")
            }
            SlotEffect::Freed { conn, token } => println!("  -> {token} of {conn} freed"),
        }
    }
    if effects.is_empty() {
        println!("  -> (waiting)");
    }
}

fn main() {
    let rules = SlotRules::default();
    let mut mint = TokenMint::new(1);
    let mut slots = ScopeSlots::new();
    let node = Incarnation::new("a", 0x5eed);
    let laptop = ConnId { gateway: node.clone(), socket: SocketId(1) };
    let phone = ConnId { gateway: node.clone(), socket: SocketId(2) };
    let laptop_again = ConnId { gateway: node, socket: SocketId(3) };

    let fx = slots.join(laptop.clone(), Some(TabId::from("laptop-tab")), None, &rules, &mut mint, 0);
    show("alice joins room:lobby from her laptop", &fx);
    let laptop_token = match fx[0] {
        SlotEffect::Grant { token, .. } => token,
        _ => unreachable!("an empty scope grants"),
    };

    let fx = slots.join(phone.clone(), Some(TabId::from("phone-tab")), None, &rules, &mut mint, 100);
    show("alice joins from her phone (policy: takeover, newest wins)", &fx);

    let fx = slots.released(&laptop, laptop_token, true, &rules, &mut mint, 130);
    show("the laptop's gateway confirms the revoke", &fx);

    let fx = slots.join(laptop_again, Some(TabId::from("phone-tab")), None, &rules, &mut mint, 200);
    show("the phone's tab reconnects on a new socket with the same tab_id", &fx);
    println!("tabs holding now: {}", slots.tabs_counted().len());
}
