//! Presence table costs in a big room: reading a topic's list (what every join and every
//! publish does), serializing it, and a join/leave while a published list is held.
//!
//! `cargo bench -p roster-core --bench presence -- --quick`

use criterion::{black_box, Criterion};
use roster_core::{AnonymousView, Incarnation, Meta, MetaValue, PhxRef, PresenceTable, SocketId, TabId, Topic};

/// Presences in the room.
const ROOM: u64 = 10_000;

fn room() -> Topic {
    Topic::from("room:big")
}

/// A room of `ROOM` users, one tab each, with a small user meta.
fn big_room() -> PresenceTable {
    let mut table = PresenceTable::new(Incarnation::new("a", 1));
    for i in 0..ROOM {
        let meta = Meta::from([("name".to_owned(), MetaValue::Str(format!("User {i}")))]);
        let tab = Some(TabId::from(format!("tab-{i}")));
        table.track(room(), format!("user-{i}"), SocketId(i), tab, meta, 1_000 + i, PhxRef::from_number(i));
    }
    table
}

fn join(table: &mut PresenceTable) {
    let meta = Meta::from([("name".to_owned(), MetaValue::Str("Joiner".to_owned()))]);
    let tab = Some(TabId::from("tab-joiner"));
    let phx_ref = PhxRef::from_number(u64::MAX);
    black_box(table.track(room(), "joiner".to_owned(), SocketId(ROOM), tab, meta, 99_999, phx_ref));
}

fn leave(table: &mut PresenceTable) {
    black_box(table.untrack(&room(), SocketId(ROOM)));
}

fn presence(c: &mut Criterion) {
    let mut table = big_room();
    let topic = room();
    c.bench_function("list 10k", |b| b.iter(|| black_box(table.list(&topic, AnonymousView::Count))));
    c.bench_function("list+json 10k", |b| {
        b.iter(|| serde_json::to_vec(&table.list(&topic, AnonymousView::Count)).map(|v| v.len()))
    });
    c.bench_function("track+untrack in 10k", |b| {
        b.iter(|| {
            join(&mut table);
            leave(&mut table);
        })
    });
    // The runtime's pattern: the joiner gets the list, which stays published while the
    // table changes again.
    c.bench_function("track+list+untrack in 10k", |b| {
        b.iter(|| {
            join(&mut table);
            let list = table.list(&topic, AnonymousView::Count);
            leave(&mut table);
            black_box(list)
        })
    });
}

// By hand rather than `criterion_group!`, whose generated `pub fn` has no doc.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    presence(&mut c);
    c.final_summary();
}
