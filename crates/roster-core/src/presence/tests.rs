//! Proofs of the presence table, its replication and its diffs.

use super::*;
use crate::ids::{SocketId, TabId};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

const COUNT: AnonymousView = AnonymousView::Count;
const LIST: AnonymousView = AnonymousView::List;
/// Anonymous viewers and signed-in users both counted (`presence = "count"`).
const USERS: PresenceView = PresenceView { anonymous: AnonymousView::Count, users: UsersView::Count };
/// Every view a topic may have, for the properties.
const VIEWS: [PresenceView; 3] = [
    PresenceView { anonymous: AnonymousView::List, users: UsersView::List },
    PresenceView { anonymous: AnonymousView::Count, users: UsersView::List },
    USERS,
];

fn inc(node: &str, boot: u128) -> Incarnation {
    Incarnation::new(node, boot)
}

fn topic(s: &str) -> Topic {
    Topic::from(s)
}

fn phx(n: u128) -> PhxRef {
    PhxRef::from_number(n as u64)
}

fn meta(pairs: &[(&str, MetaValue)]) -> Meta {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

fn name(s: &str) -> MetaValue {
    MetaValue::Str(s.to_owned())
}

fn ref_of(m: &Meta) -> String {
    match m.get("phx_ref") {
        Some(MetaValue::Str(s)) => s.clone(),
        other => panic!("meta without a string phx_ref: {other:?}"),
    }
}

type Shown = BTreeMap<String, Vec<Meta>>;

/// A list as a client would compare it: each key's metas sorted by `phx_ref`.
fn shown(list: &PresenceList) -> Shown {
    list.iter()
        .map(|(k, mut metas)| {
            metas.sort_by_key(ref_of);
            (k.to_owned(), metas)
        })
        .collect()
}

/// What phoenix.js does with `presence_state` and `presence_diff` (`Presence.syncDiff`):
/// joins first (a joined `phx_ref` replaces the same ref), then leaves (remove by `phx_ref`,
/// drop the key when no meta is left).
#[derive(Clone, Debug, Default)]
struct ClientView {
    state: Shown,
}

impl ClientView {
    fn sync_diff(&mut self, diff: &PresenceDiff) {
        for (key, joined) in &diff.joins {
            let refs: Vec<String> = joined.metas.iter().map(ref_of).collect();
            let mut metas: Vec<Meta> = self
                .state
                .get(key)
                .map(|cur| cur.iter().filter(|m| !refs.contains(&ref_of(m))).cloned().collect())
                .unwrap_or_default();
            metas.extend(joined.metas.iter().cloned());
            self.state.insert(key.clone(), metas);
        }
        for (key, left) in &diff.leaves {
            let refs: Vec<String> = left.metas.iter().map(ref_of).collect();
            if let Some(cur) = self.state.get_mut(key) {
                cur.retain(|m| !refs.contains(&ref_of(m)));
                if cur.is_empty() {
                    self.state.remove(key);
                }
            }
        }
    }

    /// [`sync_diff`](Self::sync_diff), failing on a join of a `phx_ref` the view already holds
    /// (a duplicate join) or a leave of one it does not hold (a leave for a list it never had).
    fn strict_diff(&mut self, diff: &PresenceDiff) -> Result<(), String> {
        let held: BTreeSet<(String, String)> =
            self.state.iter().flat_map(|(k, metas)| metas.iter().map(move |m| (k.clone(), ref_of(m)))).collect();
        let held_refs: BTreeSet<&String> = held.iter().map(|(_, r)| r).collect();
        for (key, joined) in &diff.joins {
            if let Some(r) = joined.metas.iter().map(ref_of).find(|r| held_refs.contains(r)) {
                return Err(format!("duplicate join of {key}/{r}"));
            }
        }
        for (key, left) in &diff.leaves {
            if let Some(r) = left.metas.iter().map(ref_of).find(|r| !held.contains(&(key.clone(), r.clone()))) {
                return Err(format!("leave of {key}/{r}, which the view does not hold"));
            }
        }
        self.sync_diff(diff);
        Ok(())
    }

    fn shown(&self) -> Shown {
        self.state
            .iter()
            .map(|(k, metas)| {
                let mut metas = metas.clone();
                metas.sort_by_key(ref_of);
                (k.clone(), metas)
            })
            .collect()
    }
}

fn track(t: &mut PresenceTable, room: &str, key: &str, socket: u64, r: u128) -> LocalWrite {
    t.track(topic(room), key.to_owned(), SocketId(socket), None, Meta::new(), 1_000 + socket, phx(r))
}

fn refs(changes: impl Iterator<Item = (Topic, String, PhxRef)>) -> BTreeSet<(Topic, String, PhxRef)> {
    changes.collect()
}

fn joins_of(c: &PresenceChanges) -> BTreeSet<(Topic, String, PhxRef)> {
    refs(c.joins().map(|(t, k, m)| (t.clone(), k.to_owned(), m.phx_ref().clone())))
}

fn leaves_of(c: &PresenceChanges) -> BTreeSet<(Topic, String, PhxRef)> {
    refs(c.leaves().map(|(t, k, m)| (t.clone(), k.to_owned(), m.phx_ref().clone())))
}

// ---- a table with no peers ----------------------------------------------------------------

#[test]
fn an_unreplicated_table_makes_no_delta_but_counts_its_changes_and_reports_them() {
    let mut t = PresenceTable::new(inc("a", 1));
    t.set_replicated(false);
    let joined = track(&mut t, "room:1", "u1", 1, 1);
    assert_eq!(joined.delta, None);
    assert_eq!(joins_of(&joined.changes), BTreeSet::from([(topic("room:1"), "u1".to_owned(), phx(1))]));
    let replaced = track(&mut t, "room:1", "u1", 1, 2);
    assert_eq!(replaced.delta, None);
    assert_eq!(leaves_of(&replaced.changes), BTreeSet::from([(topic("room:1"), "u1".to_owned(), phx(1))]));
    track(&mut t, "room:2", "u1", 1, 3);
    let updated = t.update(&topic("room:2"), SocketId(1), Meta::new(), phx(4));
    assert_eq!(updated.delta, None);
    let left = t.untrack(&topic("room:1"), SocketId(1));
    assert_eq!(left.delta, None);
    assert_eq!(leaves_of(&left.changes), BTreeSet::from([(topic("room:1"), "u1".to_owned(), phx(2))]));
    let closed = t.untrack_conn(SocketId(1));
    assert_eq!(closed.delta, None);
    assert_eq!(leaves_of(&closed.changes), BTreeSet::from([(topic("room:2"), "u1".to_owned(), phx(4))]));
    // Every change took its number, as a replicated table's would: 3 tracks, an update, 2 leaves.
    assert_eq!(t.seq(), 6);
    assert!(t.is_empty());
    // Untracking what is not there changes nothing.
    assert_eq!(t.untrack(&topic("room:1"), SocketId(1)), LocalWrite::default());
    assert_eq!(t.seq(), 6);
}

// ---- metas and lists ----------------------------------------------------------------------

#[test]
fn to_flat_reserved_keys_win_over_user_keys() {
    let forged = meta(&[
        ("name", name("Ada")),
        ("phx_ref", name("forged")),
        ("tab_id", name("forged")),
        ("node", name("forged")),
        ("online_at", MetaValue::Int(0)),
    ]);
    let m = PresenceMeta::new(phx(7), Some(TabId::from("tab-1")), NodeName::from("a"), 42, forged.clone());
    let flat = m.to_flat();
    assert_eq!(flat.len(), 5);
    assert_eq!(flat["name"], name("Ada"));
    assert_eq!(flat["phx_ref"], name(phx(7).as_str()));
    assert_eq!(flat["tab_id"], name("tab-1"));
    assert_eq!(flat["node"], name("a"));
    assert_eq!(flat["online_at"], MetaValue::Int(42));

    let no_tab = PresenceMeta::new(phx(7), None, NodeName::from("a"), 42, forged).to_flat();
    assert_eq!(no_tab.get("tab_id"), None, "left out, and a user key cannot stand in for a missing tab");
}

#[test]
fn list_serializes_to_the_phoenix_shape_with_plain_values() {
    let mut a = PresenceTable::new(inc("a", 1));
    let user = meta(&[("name", name("Ada")), ("tags", MetaValue::List(vec![MetaValue::Int(1)]))]);
    let w = a.track(topic("room:1"), "42", SocketId(1), Some("t1".into()), user, 1000, phx(1));
    let expected_meta = serde_json::json!({
        "name": "Ada", "tags": [1], "phx_ref": phx(1).as_str().to_owned(), "tab_id": "t1", "node": "a", "online_at": 1000
    });
    let list = serde_json::to_value(a.list(&topic("room:1"), COUNT)).unwrap();
    assert_eq!(list, serde_json::json!({ "42": { "metas": [expected_meta.clone()] } }));
    let diff = w.changes.topic(&topic("room:1")).unwrap().to_diff(COUNT);
    let diff = serde_json::to_value(diff).unwrap();
    assert_eq!(diff, serde_json::json!({ "joins": { "42": { "metas": [expected_meta] } }, "leaves": {} }));
}

#[test]
fn list_groups_metas_by_key_oldest_first() {
    let mut a = PresenceTable::new(inc("a", 1));
    let room = topic("room:1");
    a.track(room.clone(), "u1", SocketId(2), None, Meta::new(), 20, phx(1));
    a.track(room.clone(), "u1", SocketId(1), None, Meta::new(), 10, phx(2));
    a.track(room.clone(), "u2", SocketId(3), None, Meta::new(), 5, phx(3));
    let list = a.list(&room, LIST);
    let keys: Vec<&str> = list.keys().collect();
    assert_eq!(keys, ["u1", "u2"]);
    let u1: Vec<String> = list.get("u1").unwrap().iter().map(ref_of).collect();
    assert_eq!(u1, [phx(2).as_str().to_owned(), phx(1).as_str().to_owned()]);
    assert_eq!((a.count(&room), a.len()), (3, 3));
    assert!(a.list(&topic("room:none"), LIST).is_empty());
}

#[test]
fn list_serializes_each_meta_exactly_as_its_flat_map() {
    let mut a = PresenceTable::new(inc("a", 1));
    let room = topic("room:1");
    // User keys before, between and after the reserved ones, some shadowing them.
    let user = meta(&[
        ("a", name("first")),
        ("node", name("forged")),
        ("nodez", MetaValue::Bool(true)),
        ("online_at", MetaValue::Int(0)),
        ("p", MetaValue::Float(1.5)),
        ("tab_id", name("forged")),
        ("tabs", MetaValue::Map(meta(&[("x", MetaValue::Null)]))),
        ("zzz", MetaValue::List(vec![name("last")])),
    ]);
    a.track(room.clone(), "u1", SocketId(1), Some("t1".into()), user.clone(), u64::MAX, phx(1));
    a.track(room.clone(), "u1", SocketId(2), None, Meta::new(), 7, phx(2));
    a.track(room.clone(), "anonymous", SocketId(3), None, user, 8, phx(3));
    for view in [LIST, COUNT] {
        let list = a.list(&room, view);
        let json = serde_json::to_string(&list).unwrap();
        assert_eq!(json, serde_json::to_string(&list.to_map()).unwrap(), "same bytes, same key order");
        let u1 = list.get("u1").unwrap();
        assert_eq!(u1[1]["online_at"], MetaValue::Int(i64::MAX));
        assert_eq!(u1[1]["node"], name("a"));
    }
}

#[test]
fn a_list_is_a_snapshot_that_later_writes_do_not_change() {
    let mut a = table_with(40, inc("a", 1));
    let room = topic("room:1");
    let before = a.list(&room, LIST);
    let shape = before.to_map();
    track(&mut a, "room:1", "u1000", 1000, 1000);
    a.untrack(&room, SocketId(1));
    a.update(&room, SocketId(5), meta(&[("v", MetaValue::Int(1))]), phx(2000));
    a.drop_origin(&inc("a", 1));
    a.untrack_conn(SocketId(9));
    assert_eq!(before.to_map(), shape);
    assert_ne!(a.list(&room, LIST), before);
    assert_eq!(before.clone(), before);
}

#[test]
fn list_reads_keys_metas_and_the_anonymous_count() {
    let mut a = PresenceTable::new(inc("a", 1));
    let room = topic("room:1");
    assert_eq!(a.list(&room, COUNT), PresenceList::default());
    track(&mut a, "room:1", "u1", 1, 1);
    track(&mut a, "room:1", "u1", 2, 2);
    let plain = a.list(&room, COUNT);
    assert!(plain.get("anonymous").is_none(), "no anonymous key for a count of 0");
    assert_eq!(plain, a.list(&room, LIST), "the views differ only by anonymous entries");
    track(&mut a, "room:1", "anonymous", 3, 3);
    track(&mut a, "room:1", "anonymous", 4, 4);
    let counted = a.list(&room, COUNT);
    let listed = a.list(&room, LIST);
    assert_ne!(counted, listed);
    for list in [&counted, &listed] {
        assert_eq!((list.len(), list.is_empty()), (2, false));
        assert_eq!(list.keys().collect::<Vec<_>>(), ["anonymous", "u1"]);
        assert_eq!(list.metas_len("u1"), 2);
        assert_eq!(list.metas_len("nobody"), 0);
        assert_eq!(list.get("nobody"), None);
        assert_eq!(
            list.iter().map(|(k, m)| (k.to_owned(), MetaList { metas: m })).collect::<BTreeMap<_, _>>(),
            list.to_map()
        );
    }
    assert_eq!(counted.metas_len("anonymous"), 1);
    assert_eq!(counted.get("anonymous").unwrap(), [counted_meta("anonymous", 2)]);
    assert_eq!(listed.metas_len("anonymous"), 2);
    let json = serde_json::to_value(&counted).unwrap();
    assert_eq!(json["anonymous"], serde_json::json!({ "metas": [{ "count": 2, "phx_ref": "anonymous:2" }] }));
}

#[test]
fn a_list_can_be_published_to_other_threads() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<PresenceList>();
}

#[test]
fn metas_with_the_same_age_and_ref_are_all_kept() {
    // A faulty peer repeats one phx_ref at one millisecond on two sockets: both entries show,
    // and each leaves on its own.
    let peer = inc("b", 2);
    let record = |socket: u64| EntryRecord {
        topic: topic("room:1"),
        key: "u1".into(),
        socket: SocketId(socket),
        phx_ref: phx(1),
        tab_id: None,
        online_at: 5,
        meta: Meta::new(),
    };
    let mut a = PresenceTable::new(inc("a", 1));
    let joins = vec![Change::Join(record(1)), Change::Join(record(2))];
    a.apply_delta(&Delta { origin: peer.clone(), seq_from: 1, seq_to: 2, changes: joins }).unwrap();
    assert_eq!(a.list(&topic("room:1"), LIST).metas_len("u1"), 2);
    let leave = vec![Change::Leave { topic: topic("room:1"), socket: SocketId(1) }];
    a.apply_delta(&Delta { origin: peer, seq_from: 3, seq_to: 3, changes: leave }).unwrap();
    assert_eq!(a.list(&topic("room:1"), LIST).metas_len("u1"), 1);
    assert_eq!((a.count(&topic("room:1")), a.len()), (1, 1));
}

// ---- local writes ------------------------------------------------------------------------

#[test]
fn local_writes_take_consecutive_sequence_numbers_and_return_their_changes() {
    let me = inc("a", 1);
    let mut a = PresenceTable::new(me.clone());
    let room = topic("room:1");

    let joined = track(&mut a, "room:1", "u1", 1, 1);
    let d = joined.delta.unwrap();
    assert_eq!((d.seq_from, d.seq_to, &d.origin), (1, 1, &me));
    assert!(matches!(&d.changes[..], [Change::Join(e)] if e.phx_ref == phx(1) && e.socket == SocketId(1)));
    assert_eq!(joins_of(&joined.changes), refs([(room.clone(), "u1".into(), phx(1))].into_iter()));

    let updated = a.update(&room, SocketId(1), meta(&[("typing", MetaValue::Bool(true))]), phx(2));
    let d = updated.delta.unwrap();
    assert_eq!((d.seq_from, d.seq_to), (2, 2));
    assert!(matches!(&d.changes[..], [Change::Update(e)] if e.phx_ref == phx(2)));
    let diff = updated.changes.topic(&room).unwrap().to_diff(COUNT);
    assert_eq!(diff.leaves["u1"].metas.iter().map(ref_of).collect::<Vec<_>>(), [phx(1).as_str().to_owned()]);
    assert_eq!(diff.joins["u1"].metas.iter().map(ref_of).collect::<Vec<_>>(), [phx(2).as_str().to_owned()]);
    assert_eq!(diff.joins["u1"].metas[0]["typing"], MetaValue::Bool(true));
    assert_eq!(diff.joins["u1"].metas[0]["online_at"], MetaValue::Int(1001), "update keeps online_at");

    let left = a.untrack(&room, SocketId(1));
    let d = left.delta.unwrap();
    assert_eq!((d.seq_from, d.seq_to), (3, 3));
    assert_eq!(leaves_of(&left.changes), refs([(room.clone(), "u1".into(), phx(2))].into_iter()));

    assert_eq!(a.untrack(&room, SocketId(1)), LocalWrite::default(), "nothing to untrack");
    assert_eq!(a.update(&room, SocketId(1), Meta::new(), phx(3)), LocalWrite::default());
    assert_eq!(a.seq(), 3);
    assert!(a.is_empty());
}

#[test]
fn tracking_a_tracked_socket_again_replaces_its_entry() {
    let mut a = PresenceTable::new(inc("a", 1));
    track(&mut a, "room:1", "u1", 1, 1);
    let again = track(&mut a, "room:1", "u1", 1, 2);
    assert!(matches!(&again.delta.unwrap().changes[..], [Change::Update(_)]));
    assert_eq!(leaves_of(&again.changes).len(), 1);
    assert_eq!(joins_of(&again.changes).len(), 1);
    assert_eq!(a.len(), 1);
}

#[test]
fn untrack_conn_leaves_every_topic_of_the_connection_only() {
    let me = inc("a", 1);
    let mut a = PresenceTable::new(me.clone());
    for (i, room) in ["room:1", "room:2", "room:3"].iter().enumerate() {
        track(&mut a, room, "u1", 1, i as u128 + 1);
    }
    track(&mut a, "room:1", "u2", 2, 9);
    let conn1 = ConnId { gateway: me.clone(), socket: SocketId(1) };
    assert_eq!(a.entries_of(&conn1).len(), 3);

    let gone = a.untrack_conn(SocketId(1));
    let d = gone.delta.unwrap();
    assert_eq!((d.seq_from, d.seq_to, d.changes.len()), (5, 7, 3));
    assert_eq!(leaves_of(&gone.changes).len(), 3);
    assert!(a.entries_of(&conn1).is_empty());
    let conn2 = ConnId { gateway: me, socket: SocketId(2) };
    let left = a.entries_of(&conn2);
    assert_eq!(left.len(), 1);
    assert_eq!((left[0].topic.as_str(), left[0].key.as_str(), left[0].meta.phx_ref()), ("room:1", "u2", phx(9)));
    assert_eq!(a.topics().collect::<Vec<_>>(), [&topic("room:1")]);
    assert_eq!(a.untrack_conn(SocketId(1)), LocalWrite::default());
}

#[test]
fn a_socket_tracked_under_several_keys_keeps_each_entrys_own_key() {
    // A socket's entries share its key, kept once; a caller (or a peer) that tracks one socket
    // under several keys still finds each entry under its own.
    let me = inc("a", 1);
    let mut a = PresenceTable::new(me.clone());
    track(&mut a, "room:1", "u1", 1, 1);
    track(&mut a, "room:2", "u1", 1, 2);
    track(&mut a, "room:3", "anonymous", 1, 3);
    track(&mut a, "room:2", "u9", 1, 4);
    let conn = ConnId { gateway: me, socket: SocketId(1) };
    let keys: Vec<(String, String)> =
        a.entries_of(&conn).into_iter().map(|e| (e.topic.as_str().to_owned(), e.key)).collect();
    let want = [("room:1", "u1"), ("room:2", "u9"), ("room:3", "anonymous")];
    assert_eq!(keys, want.map(|(t, k)| (t.to_owned(), k.to_owned())));
    assert_eq!(a.list(&topic("room:2"), AnonymousView::List).keys().collect::<Vec<_>>(), ["u9"]);
    let snapshot = a.snapshot();
    let keys: Vec<&str> = snapshot.entries.iter().map(|e| &*e.key).collect();
    assert_eq!(keys, ["u1", "u9", "anonymous"]);
    let gone = a.untrack_conn(SocketId(1));
    let left: BTreeSet<(String, String)> =
        leaves_of(&gone.changes).into_iter().map(|(t, k, _)| (t.as_str().to_owned(), k)).collect();
    assert_eq!(left, want.iter().map(|(t, k)| (t.to_string(), k.to_string())).collect());
    assert!(a.is_empty());
}

#[test]
fn a_sockets_presences_share_one_meta_part_when_it_is_equal_and_keep_their_own_otherwise() {
    let me = inc("a", 1);
    let mut a = PresenceTable::new(me.clone());
    let ada = || meta(&[("name", name("Ada"))]);
    let tab = || Some(TabId::from("t1"));
    for (i, room) in ["room:1", "room:2", "room:3"].into_iter().enumerate() {
        a.track(topic(room), "u1", SocketId(1), tab(), ada(), 10 + i as u64, phx(i as u128 + 1));
    }
    // Another socket of another tab, and one with another meta: parts of their own.
    a.track(topic("room:1"), "u2", SocketId(2), Some(TabId::from("t2")), ada(), 20, phx(10));
    a.track(topic("room:2"), "u3", SocketId(3), tab(), meta(&[("name", name("Bo"))]), 21, phx(11));
    let stored = |a: &PresenceTable, room: &str, key: &str| {
        let metas = a.stored(&topic(room), key);
        assert_eq!(metas.len(), 1);
        Arc::clone(&metas[0])
    };
    let parts: Vec<Arc<PresenceMeta>> = ["room:1", "room:2", "room:3"].map(|r| stored(&a, r, "u1")).into();
    assert!(parts.iter().all(|m| Arc::ptr_eq(m.about(), parts[0].about())), "one part for the socket's three");
    assert!(!Arc::ptr_eq(stored(&a, "room:1", "u2").about(), parts[0].about()));
    assert!(!Arc::ptr_eq(stored(&a, "room:2", "u3").about(), parts[0].about()));
    // Each still reads as its own five fields, and its own online_at and phx_ref.
    let m = &parts[1];
    assert_eq!((m.phx_ref(), m.online_at(), m.tab_id(), m.node().as_str()), (phx(2), 11, tab().as_ref(), "a"));
    assert_eq!(m.meta().to_meta(), ada());
    // An update changes one topic's meta only: that entry gets a part of its own.
    a.update(&topic("room:2"), SocketId(1), meta(&[("name", name("Ada L."))]), phx(20));
    let updated = stored(&a, "room:2", "u1");
    assert_eq!(updated.meta().get("name"), Some(&name("Ada L.")));
    assert_eq!((updated.tab_id(), updated.online_at()), (tab().as_ref(), 11));
    assert!(Arc::ptr_eq(stored(&a, "room:3", "u1").about(), parts[0].about()));
    assert_eq!(stored(&a, "room:1", "u1").meta().get("name"), Some(&name("Ada")));
    // A peer's copy reads the same and encodes as before: five fields in their order.
    let mut b = PresenceTable::new(inc("b", 2));
    b.apply_snapshot(a.snapshot()).expect("applies");
    assert_eq!(all_lists(&b), all_lists(&a));
    let encoded = serde_json::to_value(&*parts[0]).expect("encodes");
    assert_eq!(
        encoded,
        serde_json::json!({"phx_ref": phx(1).as_str(), "tab_id": "t1", "node": "a", "online_at": 10, "meta": {"name": {"Str": "Ada"}}})
    );
    let decoded: PresenceMeta = serde_json::from_value(encoded).expect("decodes");
    assert_eq!(decoded, *parts[0]);
    assert_eq!(std::mem::size_of::<PresenceMeta>(), 24, "a 48-byte block with its Arc's counts");
}

/// A `phx_ref` that renders no number (a peer's or a test's text) is kept as text, in a part
/// of its own; either form reads, compares and encodes as its text, as the five fields did.
#[test]
fn a_meta_keeps_a_reference_that_is_no_number_as_its_text() {
    let ada = || meta(&[("name", name("Ada"))]);
    let tab = || Some(TabId::from("t1"));
    let made = phx(7);
    let texts = [made.clone(), PhxRef::new("r1"), PhxRef::new("a-reference-longer-than-22-bytes")];
    let metas: Vec<PresenceMeta> =
        texts.iter().map(|r| PresenceMeta::new(r.clone(), tab(), NodeName::from("a"), 10, ada())).collect();
    for (r, m) in texts.iter().zip(&metas) {
        assert_eq!(m.phx_ref(), *r);
        assert_eq!(m.about().text_ref.is_some(), r.number().is_none(), "{r:?}");
        let encoded = serde_json::to_value(m).expect("encodes");
        assert_eq!(encoded["phx_ref"], serde_json::json!(r.as_str()));
        let decoded: PresenceMeta = serde_json::from_value(encoded).expect("decodes");
        assert_eq!(decoded, *m);
        let bytes = crate::codec::encode(m).unwrap();
        assert_eq!(crate::codec::decode::<PresenceMeta>(&bytes).unwrap(), *m);
        assert_eq!(m.to_flat()["phx_ref"], MetaValue::Str(r.as_str().to_owned()));
    }
    assert!(metas[0] != metas[1] && metas[1] != metas[2]);
    // The same text given as text or as a number is one meta.
    let as_text = PresenceMeta::new(PhxRef::new(made.as_str()), tab(), NodeName::from("a"), 10, ada());
    assert_eq!(as_text, metas[0]);
    // An update to a text reference, and back to a number.
    let updated = metas[0].updated(PhxRef::new("r2"), ada());
    assert_eq!((updated.phx_ref(), updated.online_at()), (PhxRef::new("r2"), 10));
    assert_eq!(updated.updated(phx(8), ada()).phx_ref(), phx(8));
}

// ---- deltas ------------------------------------------------------------------------------

#[test]
fn a_gap_asks_for_a_snapshot_and_applies_nothing() {
    let a_inc = inc("a", 1);
    let mut a = PresenceTable::new(a_inc.clone());
    let d1 = track(&mut a, "room:1", "u1", 1, 1).delta.unwrap();
    let d2 = track(&mut a, "room:1", "u2", 2, 2).delta.unwrap();
    let d3 = track(&mut a, "room:1", "u3", 3, 3).delta.unwrap();
    let mut b = PresenceTable::new(inc("b", 2));

    let need = b.apply_delta(&d2).unwrap_err();
    assert_eq!(need, NeedSnapshot { origin: a_inc.clone(), reason: SnapshotReason::Gap { applied: 0, seq_from: 2 } });
    assert!(b.is_empty());

    b.apply_delta(&d1).unwrap();
    let before = b.list(&topic("room:1"), LIST);
    let need = b.apply_delta(&d3).unwrap_err();
    assert_eq!(need.reason, SnapshotReason::Gap { applied: 1, seq_from: 3 });
    assert_eq!(b.list(&topic("room:1"), LIST), before);
    assert_eq!(b.applied_seq(&a_inc), Some(1));

    b.apply_delta(&d2).unwrap();
    b.apply_delta(&d3).unwrap();
    assert_eq!(b.list(&topic("room:1"), LIST), a.list(&topic("room:1"), LIST));
}

#[test]
fn an_applied_delta_is_a_no_op_the_second_time() {
    let mut a = PresenceTable::new(inc("a", 1));
    let d1 = track(&mut a, "room:1", "u1", 1, 1).delta.unwrap();
    let d2 = a.untrack(&topic("room:1"), SocketId(1)).delta.unwrap();
    let mut b = PresenceTable::new(inc("b", 2));
    assert_eq!(joins_of(&b.apply_delta(&d1).unwrap()).len(), 1);
    assert!(b.apply_delta(&d1).unwrap().is_empty());
    assert_eq!(b.len(), 1);
    assert_eq!(leaves_of(&b.apply_delta(&d2).unwrap()).len(), 1);
    assert!(b.apply_delta(&d1).unwrap().is_empty(), "an old join never comes back");
    assert!(b.apply_delta(&d2).unwrap().is_empty());
    assert!(b.is_empty());
}

#[test]
fn a_coalesced_delta_that_straddles_what_was_applied_asks_for_a_snapshot() {
    let mut a = PresenceTable::new(inc("a", 1));
    let mut buffer = DeltaBuffer::new(5);
    let d1 = track(&mut a, "room:1", "u1", 1, 1).delta.unwrap();
    buffer.push(d1.clone(), 0);
    buffer.push(a.untrack(&topic("room:1"), SocketId(1)).delta.unwrap(), 1);
    let merged = buffer.take().unwrap();
    assert_eq!((merged.seq_from, merged.seq_to), (1, 2));
    let mut b = PresenceTable::new(inc("b", 2));
    b.apply_delta(&d1).unwrap();
    let need = b.apply_delta(&merged).unwrap_err();
    assert_eq!(need.reason, SnapshotReason::Overlap { applied: 1, seq_from: 1 });
    assert_eq!(b.len(), 1);
}

#[test]
fn malformed_deltas_ask_for_a_snapshot_without_panicking() {
    let a_inc = inc("a", 1);
    let mut b = PresenceTable::new(inc("b", 2));
    for (seq_from, seq_to) in [(0, 0), (0, 3), (5, 4)] {
        let d = Delta { origin: a_inc.clone(), seq_from, seq_to, changes: vec![] };
        assert_eq!(b.apply_delta(&d).unwrap_err().reason, SnapshotReason::Malformed);
    }
    let leave_unknown = Change::Leave { topic: topic("room:1"), socket: SocketId(9) };
    let d = Delta { origin: a_inc, seq_from: 1, seq_to: u64::MAX, changes: vec![leave_unknown] };
    assert!(b.apply_delta(&d).unwrap().is_empty());
}

#[test]
fn deltas_from_this_nodes_own_name_are_ignored() {
    let mut b = PresenceTable::new(inc("b", 2));
    let mut old_b = PresenceTable::new(inc("b", 1));
    let d = track(&mut old_b, "room:1", "u1", 1, 1).delta.unwrap();
    assert!(b.apply_delta(&d).unwrap().is_empty());
    assert!(b.apply_snapshot(old_b.snapshot()).is_none());
    assert!(b.is_empty());
}

// ---- incarnations and snapshots ----------------------------------------------------------

#[test]
fn a_new_incarnation_asks_for_a_snapshot_which_replaces_the_old_entries() {
    let (a1_inc, a2_inc) = (inc("a", 1), inc("a", 11));
    let mut a1 = PresenceTable::new(a1_inc.clone());
    let mut b = PresenceTable::new(inc("b", 2));
    b.apply_delta(&track(&mut a1, "room:1", "u1", 1, 1).delta.unwrap()).unwrap();
    b.apply_delta(&track(&mut a1, "room:2", "u2", 2, 2).delta.unwrap()).unwrap();

    let mut a2 = PresenceTable::new(a2_inc.clone());
    let first = track(&mut a2, "room:1", "u3", 1, 3).delta.unwrap();
    assert_eq!(first.seq_from, 1);
    let need = b.apply_delta(&first).unwrap_err();
    assert_eq!(need, NeedSnapshot { origin: a2_inc.clone(), reason: SnapshotReason::NewIncarnation });
    assert_eq!(b.len(), 2, "nothing applied");

    let changes = b.apply_snapshot(a2.snapshot()).unwrap();
    let old = [(topic("room:1"), "u1".into(), phx(1)), (topic("room:2"), "u2".into(), phx(2))];
    assert_eq!(leaves_of(&changes), refs(old.into_iter()));
    assert_eq!(joins_of(&changes), refs([(topic("room:1"), "u3".into(), phx(3))].into_iter()));
    assert_eq!(b.applied_seq(&a2_inc), Some(1));
    assert_eq!(b.applied_seq(&a1_inc), None);

    // The previous life is retired: nothing from it applies again.
    let late = track(&mut a1, "room:1", "u4", 4, 4).delta.unwrap();
    assert!(b.apply_delta(&late).unwrap().is_empty());
    assert!(b.apply_snapshot(a1.snapshot()).is_none());
    assert_eq!(b.list(&topic("room:1"), LIST), a2.list(&topic("room:1"), LIST));
    assert_eq!(b.len(), 1);
}

#[test]
fn a_stale_snapshot_is_ignored_and_a_newer_one_replaces() {
    let a_inc = inc("a", 1);
    let mut a = PresenceTable::new(a_inc.clone());
    let mut b = PresenceTable::new(inc("b", 2));
    track(&mut a, "room:1", "u1", 1, 1);
    let old = a.snapshot();
    track(&mut a, "room:1", "u2", 2, 2);
    a.untrack(&topic("room:1"), SocketId(1));
    let newer = a.snapshot();
    assert_eq!((old.seq, newer.seq), (1, 3));

    assert!(b.apply_snapshot(newer.clone()).is_some());
    assert!(b.apply_snapshot(old).is_none(), "older than what was applied");
    assert!(b.apply_snapshot(newer).is_none(), "the same seq brings nothing new");
    assert_eq!(b.list(&topic("room:1"), LIST), a.list(&topic("room:1"), LIST));

    a.update(&topic("room:1"), SocketId(2), Meta::new(), phx(5));
    track(&mut a, "room:9", "u9", 9, 9);
    let changes = b.apply_snapshot(a.snapshot()).unwrap();
    assert_eq!(leaves_of(&changes), refs([(topic("room:1"), "u2".into(), phx(2))].into_iter()));
    let joined = [(topic("room:1"), "u2".into(), phx(5)), (topic("room:9"), "u9".into(), phx(9))];
    assert_eq!(joins_of(&changes), refs(joined.into_iter()));
    assert_eq!(b.applied_seq(&a_inc), Some(5));

    // Deltas after the snapshot continue from its seq.
    let d6 = a.untrack(&topic("room:9"), SocketId(9)).delta.unwrap();
    assert_eq!(leaves_of(&b.apply_delta(&d6).unwrap()).len(), 1);
}

fn table_with(n: u64, origin: Incarnation) -> PresenceTable {
    let mut a = PresenceTable::new(origin);
    for i in 0..n {
        let key = if i % 3 == 0 { "anonymous".to_owned() } else { format!("u{i}") };
        a.track(topic(&format!("room:{}", i % 4)), key, SocketId(i), None, Meta::new(), i, phx(u128::from(i) + 1));
    }
    a
}

fn all_lists(t: &PresenceTable) -> Vec<(PresenceList, PresenceList)> {
    (0..10).map(|i| topic(&format!("room:{i}"))).map(|r| (t.list(&r, LIST), t.list(&r, COUNT))).collect()
}

#[test]
fn a_chunked_snapshot_assembles_equal_to_the_whole() {
    let a = table_with(10, inc("a", 1));
    let chunks = a.snapshot_chunks(3, usize::MAX);
    assert_eq!(chunks.len(), 4);
    assert!(chunks.iter().all(|c| c.count == 4 && c.seq == 10 && c.entries.len() <= 3));
    assert_eq!(chunks.iter().map(|c| c.entries.len()).sum::<usize>(), 10);

    let mut whole = PresenceTable::new(inc("w", 3));
    let expected = whole.apply_snapshot(a.snapshot()).unwrap();
    let mut b = PresenceTable::new(inc("b", 2));
    let mut parts = chunks.into_iter().rev();
    let last = parts.next_back().unwrap();
    for part in parts {
        assert!(b.apply_snapshot_chunk(part.clone()).is_none(), "incomplete");
        assert!(b.apply_snapshot_chunk(part).is_none(), "a duplicate part is harmless");
    }
    let mut broken = last.clone();
    broken.index = 7;
    assert!(b.apply_snapshot_chunk(broken).is_none(), "index out of range");
    let mut miscounted = last.clone();
    miscounted.count = 5;
    assert!(b.apply_snapshot_chunk(miscounted).is_none(), "count disagrees");
    assert!(b.is_empty());
    let changes = b.apply_snapshot_chunk(last).unwrap();
    assert_eq!(joins_of(&changes), joins_of(&expected));
    assert_eq!(all_lists(&b), all_lists(&whole));
    assert_eq!(all_lists(&b), all_lists(&a));
}

#[test]
fn a_snapshot_of_large_metas_is_split_by_bytes_and_assembles_equal_to_the_whole() {
    let mut a = PresenceTable::new(inc("a", 1));
    let big = "x".repeat(20_000);
    for i in 0..50u64 {
        let m = meta(&[("blob", name(&big)), ("n", MetaValue::Int(i as i64))]);
        a.track(topic("room:big"), format!("u{i}"), SocketId(i), None, m, i, phx(u128::from(i)));
    }
    let by_entries = a.snapshot_chunks(1000, usize::MAX);
    assert_eq!(by_entries.len(), 1, "one chunk of 50 entries, about 1 MB");
    let chunks = a.snapshot_chunks(1000, 64 * 1024);
    // 20 kB a meta: three entries fit in 64 kB, a fourth does not.
    assert_eq!(chunks.len(), 17);
    for c in &chunks {
        let bytes: usize = c.entries.iter().map(EntryRecord::wire_bytes).sum();
        assert!(bytes <= 64 * 1024 && !c.entries.is_empty(), "chunk {} of {bytes} bytes", c.index);
        assert_eq!(c.count, 17);
    }
    // One entry larger than the limit still travels, alone in its chunk.
    let lone = a.snapshot_chunks(1000, 1000);
    assert_eq!(lone.len(), 50);
    assert!(lone.iter().all(|c| c.entries.len() == 1));

    let mut b = PresenceTable::new(inc("b", 2));
    let mut done = None;
    for c in chunks {
        done = b.apply_snapshot_chunk(c);
    }
    assert_eq!(joins_of(&done.expect("the last chunk completes the snapshot")).len(), 50);
    assert_eq!(b.list(&topic("room:big"), LIST), a.list(&topic("room:big"), LIST));
}

#[test]
fn an_empty_snapshot_is_one_empty_chunk_and_clears_the_origin() {
    let a_inc = inc("a", 1);
    let mut a = table_with(2, a_inc.clone());
    let mut b = PresenceTable::new(inc("b", 2));
    b.apply_snapshot(a.snapshot()).unwrap();
    a.untrack_conn(SocketId(0));
    a.untrack_conn(SocketId(1));
    let chunks = a.snapshot_chunks(0, usize::MAX);
    assert_eq!(chunks.len(), 1);
    assert!(chunks[0].entries.is_empty());
    let changes = b.apply_snapshot_chunk(chunks.into_iter().next().unwrap()).unwrap();
    assert_eq!(leaves_of(&changes).len(), 2);
    assert!(b.is_empty());
    assert_eq!(b.applied_seq(&a_inc), Some(4));
}

#[test]
fn chunks_of_an_older_snapshot_are_ignored_and_a_newer_one_restarts_assembly() {
    let mut a = table_with(4, inc("a", 1));
    let old = a.snapshot_chunks(2, usize::MAX);
    track(&mut a, "room:1", "u9", 9, 99);
    let new = a.snapshot_chunks(2, usize::MAX);
    let mut b = PresenceTable::new(inc("b", 2));
    assert!(b.apply_snapshot_chunk(old[0].clone()).is_none());
    assert!(b.apply_snapshot_chunk(new[0].clone()).is_none());
    assert!(b.apply_snapshot_chunk(old[1].clone()).is_none(), "older than the one being assembled");
    assert!(b.apply_snapshot_chunk(new[1].clone()).is_none());
    assert!(b.apply_snapshot_chunk(new[2].clone()).is_some());
    assert_eq!(all_lists(&b), all_lists(&a));
}

// ---- peers down --------------------------------------------------------------------------

#[test]
fn drop_origin_returns_exactly_that_origins_entries_as_leaves() {
    let (a_inc, c_inc) = (inc("a", 1), inc("c", 3));
    let a = table_with(7, a_inc.clone());
    let mut c = PresenceTable::new(c_inc.clone());
    track(&mut c, "room:1", "u1", 1, 1_001);
    let mut b = PresenceTable::new(inc("b", 2));
    track(&mut b, "room:1", "u2", 1, 2_001);
    b.apply_snapshot(a.snapshot()).unwrap();
    b.apply_snapshot(c.snapshot()).unwrap();

    let expected = {
        let mut whole = PresenceTable::new(inc("w", 4));
        joins_of(&whole.apply_snapshot(a.snapshot()).unwrap())
    };
    let dropped = b.drop_origin(&a_inc);
    assert_eq!(leaves_of(&dropped), expected);
    assert_eq!(dropped.joins().count(), 0);
    assert_eq!(b.len(), 2);
    assert_eq!(b.applied_seq(&a_inc), None);
    assert!(b.drop_origin(&a_inc).is_empty(), "dropping twice leaves nothing more");
    let me = b.origin().clone();
    assert!(b.drop_origin(&me).is_empty(), "never drops itself");
    assert_eq!(b.count(&topic("room:1")), 2);

    // The peer comes back: its deltas need a snapshot; the snapshot, even at the same seq,
    // brings its entries back.
    let mut a = a;
    let next = track(&mut a, "room:1", "u8", 8, 8_001).delta.unwrap();
    assert_eq!(b.apply_delta(&next).unwrap_err().reason, SnapshotReason::Dropped);
    let mut same_seq = a.snapshot();
    same_seq.entries.retain(|e| e.socket != SocketId(8));
    same_seq.seq -= 1;
    assert_eq!(joins_of(&b.apply_snapshot(same_seq).unwrap()), expected);
    assert_eq!(b.len(), 9);
    assert_eq!(leaves_of(&b.drop_node(&NodeName::from("c"))).len(), 1);
    assert_eq!(b.applied_seq(&c_inc), None);
}

// ---- anonymous viewers -------------------------------------------------------------------

#[test]
fn anonymous_count_is_the_cluster_wide_total_and_list_mode_lists_each() {
    let room = topic("room:1");
    let mut a = PresenceTable::new(inc("a", 1));
    let mut c = PresenceTable::new(inc("c", 3));
    let mut b = PresenceTable::new(inc("b", 2));
    for s in 0..2 {
        track(&mut a, "room:1", "anonymous", s, 100 + u128::from(s));
    }
    for s in 0..3 {
        track(&mut c, "room:1", "anonymous", s, 200 + u128::from(s));
    }
    track(&mut b, "room:1", "anonymous", 0, 300);
    track(&mut b, "room:1", "u1", 1, 301);
    b.apply_snapshot(a.snapshot()).unwrap();
    b.apply_snapshot(c.snapshot()).unwrap();

    let counted = b.list(&room, COUNT);
    assert_eq!(
        counted.get("anonymous").unwrap(),
        vec![meta(&[("count", MetaValue::Int(6)), ("phx_ref", name("anonymous:6"))])]
    );
    assert_eq!(counted.metas_len("u1"), 1);
    let listed = b.list(&room, LIST);
    assert_eq!(listed.metas_len("anonymous"), 6);
    assert!(listed.get("anonymous").unwrap().iter().all(|m| !m.contains_key("tab_id")));
    assert_eq!((b.count(&room), b.anonymous_count(&room)), (7, 6));

    // A change of the count is one leave of the old count's meta and one join of the new.
    let changes = b.drop_node(&NodeName::from("c"));
    assert_eq!(changes.topic(&room).unwrap().anonymous_count(), Some(CountChange { before: 6, after: 3 }));
    let diff = changes.topic(&room).unwrap().to_diff(COUNT);
    assert_eq!(
        diff.leaves["anonymous"].metas,
        vec![meta(&[("count", MetaValue::Int(6)), ("phx_ref", name("anonymous:6"))])]
    );
    assert_eq!(
        diff.joins["anonymous"].metas,
        vec![meta(&[("count", MetaValue::Int(3)), ("phx_ref", name("anonymous:3"))])]
    );
    assert_eq!(changes.topic(&room).unwrap().to_diff(LIST).leaves["anonymous"].metas.len(), 3);
}

#[test]
fn a_key_with_many_metas_keeps_them_oldest_first_through_inserts_and_removals() {
    let room = topic("room:1");
    let mut a = PresenceTable::new(inc("a", 1));
    // Tracked out of age order: online_at is 1000 + socket.
    for s in (0..40u64).rev() {
        track(&mut a, "room:1", "anonymous", s, u128::from(s) + 1);
    }
    let ages = |t: &PresenceTable| -> Vec<i64> {
        t.list(&room, LIST)
            .get("anonymous")
            .unwrap_or_default()
            .iter()
            .map(|m| match m["online_at"] {
                MetaValue::Int(i) => i,
                _ => panic!("online_at"),
            })
            .collect()
    };
    assert_eq!(ages(&a), (1000..1040).collect::<Vec<_>>());
    for s in (0..40u64).filter(|s| s % 4 != 0) {
        a.untrack(&room, SocketId(s));
    }
    assert_eq!(ages(&a), (1000..1040).step_by(4).collect::<Vec<_>>());
    assert_eq!(a.list(&room, COUNT).get("anonymous").unwrap()[0]["count"], MetaValue::Int(10));
    for s in (0..40u64).step_by(4) {
        a.untrack(&room, SocketId(s));
    }
    assert!(a.list(&room, LIST).is_empty() && a.is_empty());
}

#[test]
fn a_users_count_view_shows_distinct_signed_in_users_and_a_diff_moves_only_the_count() {
    let room = topic("room:1");
    let mut a = PresenceTable::new(inc("a", 1));
    track(&mut a, "room:1", "u1", 1, 1);
    track(&mut a, "room:1", "u1", 2, 2); // u1's second tab: still one user
    track(&mut a, "room:1", "u2", 3, 3);
    track(&mut a, "room:1", "anonymous", 4, 4);
    let list = a.list(&room, USERS);
    assert_eq!(
        serde_json::to_value(&list).unwrap(),
        serde_json::json!({
            "anonymous": {"metas": [{"count": 1, "phx_ref": "anonymous:1"}]},
            "users": {"metas": [{"count": 2, "phx_ref": "users:2"}]},
        })
    );
    assert_eq!(list.keys().collect::<Vec<_>>(), ["anonymous", "users"]);
    assert_eq!((list.len(), list.metas_len("users"), list.get("u1")), (2, 1, None));
    assert_eq!(serde_json::to_value(&list).unwrap(), serde_json::to_value(list.to_map()).unwrap());

    let diff = a.untrack(&room, SocketId(2)).changes.topic(&room).unwrap().to_diff(USERS);
    assert!(diff.is_empty(), "a second tab leaving changes no count: {diff:?}");
    let diff = a.untrack(&room, SocketId(3)).changes.topic(&room).unwrap().to_diff(USERS);
    assert_eq!(diff.leaves.keys().collect::<Vec<_>>(), ["users"]);
    assert_eq!(diff.leaves["users"].metas, [counted_meta("users", 2)]);
    assert_eq!(diff.joins["users"].metas, [counted_meta("users", 1)]);
    assert_eq!(diff.joins.len(), 1, "no user key in a counted room: {diff:?}");
    let diff = a.untrack(&room, SocketId(1)).changes.topic(&room).unwrap().to_diff(USERS);
    assert_eq!((diff.leaves["users"].metas.clone(), diff.joins.len()), (vec![counted_meta("users", 1)], 0));
    assert_eq!(a.list(&room, USERS).keys().collect::<Vec<_>>(), ["anonymous"]);
}

// ---- coalescing --------------------------------------------------------------------------

#[test]
fn delta_buffer_cancels_a_join_then_leave_but_keeps_the_range_contiguous() {
    let origin = inc("a", 1);
    let mut a = PresenceTable::new(origin.clone());
    let mut b = PresenceTable::new(inc("b", 2));
    b.apply_delta(&track(&mut a, "room:1", "old", 1, 1).delta.unwrap()).unwrap();

    let mut buffer = DeltaBuffer::new(5);
    let mut one_by_one = b.clone();
    let writes = vec![
        track(&mut a, "room:1", "x", 2, 2),
        track(&mut a, "room:1", "y", 3, 3),
        a.untrack(&topic("room:1"), SocketId(2)),
        a.update(&topic("room:1"), SocketId(3), Meta::new(), phx(4)),
        a.update(&topic("room:1"), SocketId(1), Meta::new(), phx(5)),
        a.untrack(&topic("room:1"), SocketId(1)),
    ];
    for (i, w) in writes.into_iter().enumerate() {
        let d = w.delta.unwrap();
        one_by_one.apply_delta(&d).unwrap();
        assert!(buffer.push(d, 100 + i as u64).is_none());
    }
    assert_eq!(buffer.due_at(), Some(105));
    assert!(buffer.flush(104).is_none());
    let merged = buffer.flush(105).unwrap();
    assert!(buffer.take().is_none());
    assert_eq!((merged.seq_from, merged.seq_to), (2, 7));
    assert_eq!(merged.changes.len(), 2, "x joined and left: cancelled; y: one join; old: one leave");
    assert!(merged.changes.iter().any(|c| matches!(c, Change::Join(e) if e.phx_ref == phx(4))));
    assert!(merged.changes.contains(&Change::Leave { topic: topic("room:1"), socket: SocketId(1) }));
    b.apply_delta(&merged).unwrap();
    assert_eq!(all_lists(&b), all_lists(&one_by_one));
    assert_eq!(all_lists(&b), all_lists(&a));

    // The next delta follows on; a delta that does not follow on flushes the pending one.
    let d8 = track(&mut a, "room:1", "z", 4, 6).delta.unwrap();
    assert_eq!(d8.seq_from, 8);
    assert!(buffer.push(d8.clone(), 200).is_none());
    let flushed = buffer.push(d8, 201).unwrap();
    assert_eq!((flushed.seq_from, flushed.seq_to), (8, 8));
}

/// A fan-out whose subscribers are their own ids.
fn fanout() -> Fanout<SubscriberId> {
    Fanout::new(20)
}

fn diffs_of(out: &[Delivery<SubscriberId>]) -> Vec<(&Topic, &PresenceDiff, &[SubscriberId])> {
    out.iter()
        .filter_map(|d| match d {
            Delivery::Diff { topic, diff, to } => Some((topic, diff, to.as_slice())),
            Delivery::State { .. } => None,
        })
        .collect()
}

fn states_of(out: &[Delivery<SubscriberId>]) -> Vec<(&Topic, &PresenceList, &[SubscriberId])> {
    out.iter()
        .filter_map(|d| match d {
            Delivery::State { topic, state, to } => Some((topic, state, to.as_slice())),
            Delivery::Diff { .. } => None,
        })
        .collect()
}

/// Feeds a local write's changes of `room` to the fan-out with the list after it.
fn feed(f: &mut Fanout<SubscriberId>, t: &PresenceTable, w: LocalWrite, now: Millis, view: AnonymousView) {
    for (topic, changes) in w.changes {
        f.changes(&topic, changes, t.list(&topic, view), now);
    }
}

/// A fan-out with one synced subscriber (id 1) of `room:1`, as of `now`.
fn synced(t: &PresenceTable, now: Millis, view: AnonymousView) -> Fanout<SubscriberId> {
    let mut f = fanout();
    let room = topic("room:1");
    f.subscribe(&room, SubscriberId(1), t.list(&room, view), now);
    let out = f.flush(now + 20);
    assert_eq!(states_of(&out).len(), 1);
    f
}

#[test]
fn a_join_then_leave_inside_the_window_sends_nothing() {
    let room = topic("room:1");
    let mut a = PresenceTable::new(inc("a", 1));
    let mut f = synced(&a, 0, LIST);
    let w = track(&mut a, "room:1", "u1", 1, 1);
    feed(&mut f, &a, w, 100, LIST);
    let w = a.untrack(&room, SocketId(1));
    feed(&mut f, &a, w, 110, LIST);
    assert!(f.is_pending(&room));
    assert_eq!(f.due_at(), Some(120));
    assert!(f.flush(120).is_empty());
    assert_eq!(f.due_at(), None);
}

#[test]
fn an_update_is_one_leave_and_one_join_per_window() {
    let room = topic("room:1");
    let mut a = PresenceTable::new(inc("a", 1));
    track(&mut a, "room:1", "u1", 1, 1);
    let mut f = synced(&a, 0, LIST);
    let w = a.update(&room, SocketId(1), Meta::new(), phx(2));
    feed(&mut f, &a, w, 100, LIST);
    let w = a.update(&room, SocketId(1), Meta::new(), phx(3));
    feed(&mut f, &a, w, 101, LIST);
    let w = track(&mut a, "room:1", "u2", 2, 4);
    feed(&mut f, &a, w, 102, LIST);
    let w = a.update(&room, SocketId(2), Meta::new(), phx(5));
    feed(&mut f, &a, w, 103, LIST);
    assert!(f.flush(119).is_empty());
    let flushed = f.flush(120);
    let diffs = diffs_of(&flushed);
    assert_eq!(diffs.len(), 1);
    let (t, diff, to) = diffs[0];
    assert_eq!((t, to), (&room, &[SubscriberId(1)][..]));
    let refs = |side: &BTreeMap<String, MetaList>| -> Vec<(String, String)> {
        side.iter().flat_map(|(k, l)| l.metas.iter().map(move |m| (k.clone(), ref_of(m)))).collect()
    };
    assert_eq!(refs(&diff.leaves), [("u1".to_owned(), phx(1).as_str().to_owned())]);
    let mut joins = refs(&diff.joins);
    joins.sort();
    assert_eq!(joins, [("u1".to_owned(), phx(3).as_str().to_owned()), ("u2".to_owned(), phx(5).as_str().to_owned())]);
}

#[test]
fn the_anonymous_count_moves_at_most_once_per_window() {
    let room = topic("room:1");
    let mut a = PresenceTable::new(inc("a", 1));
    track(&mut a, "room:1", "anonymous", 1, 1);
    track(&mut a, "room:1", "anonymous", 2, 2);
    let mut f = synced(&a, 0, COUNT);
    for s in 3..6 {
        let w = track(&mut a, "room:1", "anonymous", s, u128::from(s));
        feed(&mut f, &a, w, 100, COUNT);
    }
    let w = a.untrack(&room, SocketId(1));
    feed(&mut f, &a, w, 105, COUNT);
    let flushed = f.flush(500);
    let diff = diffs_of(&flushed)[0].1;
    assert_eq!(
        diff.leaves["anonymous"].metas,
        vec![meta(&[("count", MetaValue::Int(2)), ("phx_ref", name("anonymous:2"))])]
    );
    assert_eq!(
        diff.joins["anonymous"].metas,
        vec![meta(&[("count", MetaValue::Int(4)), ("phx_ref", name("anonymous:4"))])]
    );
    assert_eq!((diff.joins.len(), diff.leaves.len()), (1, 1));

    // Back and forth inside one window: nothing to say.
    let w = track(&mut a, "room:1", "anonymous", 9, 9);
    feed(&mut f, &a, w, 600, COUNT);
    let w = a.untrack(&room, SocketId(9));
    feed(&mut f, &a, w, 601, COUNT);
    assert!(f.flush(700).is_empty());
}

#[test]
fn a_subscriber_arriving_mid_window_gets_the_list_at_its_close_and_never_that_windows_diff() {
    // The kill scenario: a user's entry arrives from a peer, a watcher subscribes right after,
    // and the peer dies inside the same window. The window nets to nothing, so a watcher whose
    // state held the user would never hear that it left.
    let room = topic("room:1");
    let mut b = PresenceTable::new(inc("b", 2));
    let mut c = PresenceTable::new(inc("c", 3));
    let mut f = synced(&c, 0, LIST);
    let delta = track(&mut b, "room:1", "u1", 1, 1).delta.unwrap();
    let changes = c.apply_delta(&delta).unwrap();
    feed(&mut f, &c, LocalWrite { delta: None, changes }, 100, LIST);
    f.subscribe(&room, SubscriberId(2), c.list(&room, LIST), 101);
    let changes = c.drop_node(&NodeName::from("b"));
    feed(&mut f, &c, LocalWrite { delta: None, changes }, 102, LIST);
    let out = f.flush(120);
    assert!(diffs_of(&out).is_empty(), "the old subscriber never saw u1: nothing to say");
    let states = states_of(&out);
    assert_eq!(states.len(), 1);
    assert_eq!((states[0].0, states[0].2), (&room, &[SubscriberId(2)][..]));
    assert!(states[0].1.is_empty(), "the newcomer gets the list as the window closes: without u1");

    // From then on both get the same diffs.
    let w = track(&mut c, "room:1", "u2", 7, 7);
    feed(&mut f, &c, w, 200, LIST);
    let out = f.flush(220);
    let diffs = diffs_of(&out);
    let mut to = diffs[0].2.to_vec();
    to.sort();
    assert_eq!(to, [SubscriberId(1), SubscriberId(2)]);
    assert!(states_of(&out).is_empty());
}

#[test]
fn every_subscriber_arriving_in_one_window_shares_one_state() {
    let room = topic("room:1");
    let mut a = PresenceTable::new(inc("a", 1));
    let mut f = synced(&a, 0, LIST);
    for s in 2..100u64 {
        let w = track(&mut a, "room:1", &format!("u{s}"), s, u128::from(s));
        feed(&mut f, &a, w, 100, LIST);
        f.subscribe(&room, SubscriberId(s), a.list(&room, LIST), 100);
    }
    let out = f.flush(120);
    assert_eq!(out.len(), 2, "one diff and one state for 98 joins and 98 subscribers");
    assert_eq!(diffs_of(&out)[0].1.joins.len(), 98);
    assert_eq!(diffs_of(&out)[0].2, [SubscriberId(1)]);
    assert_eq!(states_of(&out)[0].1.len(), 98);
    assert_eq!(states_of(&out)[0].2.len(), 98);
}

#[test]
fn a_bigger_room_gets_a_longer_window_up_to_a_second() {
    assert_eq!([window_ms(20, 0), window_ms(20, 1), window_ms(20, 100)], [20, 20, 20]);
    assert_eq!([window_ms(20, 101), window_ms(20, 1000), window_ms(20, 2000)], [40, 200, 400]);
    assert_eq!([window_ms(20, 10_000), window_ms(20, 1_000_000)], [1000, 1000]);
    assert_eq!(window_ms(5000, 1_000_000), 5000, "a diff_ms above the cap is kept");

    // A window's length is fixed when it opens (by the subscribers then); windows of
    // different lengths close in order.
    let mut a = PresenceTable::new(inc("a", 1));
    let (big, small) = (topic("room:big"), topic("room:small"));
    let mut f = fanout();
    for s in 0..150 {
        f.subscribe(&big, SubscriberId(s), a.list(&big, LIST), 0);
    }
    assert_eq!(states_of(&f.flush(20)).len(), 1, "the first subscriber opened a 20 ms window");
    let w = track(&mut a, "room:big", "u1", 1, 1);
    feed(&mut f, &a, w, 100, LIST);
    f.subscribe(&small, SubscriberId(1000), a.list(&small, LIST), 105);
    assert_eq!(f.due_at(), Some(125), "the small room's window (20 ms) closes first");
    assert_eq!(states_of(&f.flush(125)).len(), 1);
    assert_eq!(f.due_at(), Some(140), "150 subscribers: a 40 ms window");
    assert!(f.flush(139).is_empty());
    assert_eq!(diffs_of(&f.flush(140))[0].2.len(), 150);
}

#[test]
fn an_unsubscribed_subscriber_gets_nothing_more_and_an_empty_topic_is_forgotten() {
    let room = topic("room:1");
    let mut a = PresenceTable::new(inc("a", 1));
    let mut f = synced(&a, 0, LIST);
    let w = track(&mut a, "room:1", "u1", 1, 1);
    feed(&mut f, &a, w, 100, LIST);
    f.subscribe(&room, SubscriberId(2), a.list(&room, LIST), 100);
    assert_eq!(f.subscribers(&room), 2);
    assert!(f.unsubscribe(&room, SubscriberId(2)));
    assert!(!f.unsubscribe(&room, SubscriberId(2)), "only once");
    let out = f.flush(120);
    assert!(states_of(&out).is_empty());
    assert!(f.unsubscribe(&room, SubscriberId(1)));
    assert_eq!(f.topics(), 0);
    let w = track(&mut a, "room:1", "u2", 2, 2);
    feed(&mut f, &a, w, 200, LIST);
    assert_eq!(f.due_at(), None, "a topic nobody watches opens no window");
}

#[test]
fn subscribers_in_any_order_of_ids_get_exactly_what_is_theirs() {
    // Ids arrive out of order, one subscribes twice, some leave while waiting or synced: each
    // delivery goes to exactly the subscribers of its kind, each once, sorted by id.
    let mut a = PresenceTable::new(inc("a", 1));
    let room = topic("room:1");
    let mut f = fanout();
    for (i, s) in [5u64, 3, 9, 1, 7].into_iter().enumerate() {
        f.subscribe(&room, SubscriberId(s), a.list(&room, LIST), 100 + i as u64);
    }
    f.subscribe(&room, SubscriberId(3), a.list(&room, LIST), 101);
    assert!(f.unsubscribe(&room, SubscriberId(9)));
    let out = f.flush(200);
    let states = states_of(&out);
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].2, [1, 3, 5, 7].map(SubscriberId));
    // Synced now; more arrive, below and above, while a change is pending.
    f.subscribe(&room, SubscriberId(4), a.list(&room, LIST), 300);
    f.subscribe(&room, SubscriberId(0), a.list(&room, LIST), 300);
    f.subscribe(&room, SubscriberId(8), a.list(&room, LIST), 300);
    assert!(f.unsubscribe(&room, SubscriberId(5)));
    assert!(!f.unsubscribe(&room, SubscriberId(9)), "gone already");
    let w = track(&mut a, "room:1", "u1", 1, 1);
    feed(&mut f, &a, w, 301, LIST);
    let out = f.flush(400);
    assert_eq!(diffs_of(&out)[0].2, [1, 3, 7].map(SubscriberId));
    assert_eq!(states_of(&out)[0].2, [0, 4, 8].map(SubscriberId));
    let mut members: Vec<SubscriberId> = f.members(&room).copied().collect();
    members.sort();
    assert_eq!(members, [0, 1, 3, 4, 7, 8].map(SubscriberId));
    // The merged list is sorted: every one of them is found again.
    for s in [0, 1, 3, 4, 7, 8] {
        assert!(f.unsubscribe(&room, SubscriberId(s)), "{s}");
    }
    assert_eq!(f.topics(), 0);
}

/// Applies what a window sent to subscriber `id`'s view, as phoenix.js would: a state replaces
/// the view, a diff is synced strictly (no duplicate join, no leave of what it does not hold).
fn deliver_to(view: &mut ClientView, id: SubscriberId, out: &[Delivery<SubscriberId>]) {
    for d in out {
        match d {
            Delivery::State { state, to, .. } if to.contains(&id) => view.state = shown(state),
            Delivery::Diff { diff, to, .. } if to.contains(&id) => view.strict_diff(diff).unwrap(),
            _ => {}
        }
    }
}

// A subscriber that arrives while a window is open, with the list as it is then (issue 15's
// presence bug, first fixed in the old coalescer): when the window closes, it and every older
// subscriber show exactly the node's list, metas and anonymous counts included.

#[test]
fn a_subscriber_that_joins_between_a_join_and_a_leave_in_one_window_ends_without_the_leaver() {
    let room = topic("room:1");
    let mut a = PresenceTable::new(inc("a", 1));
    track(&mut a, "room:1", "u0", 1, 1);
    let mut f = synced(&a, 0, LIST);
    let mut old = ClientView { state: shown(&a.list(&room, LIST)) };
    let w = track(&mut a, "room:1", "u1", 2, 2);
    feed(&mut f, &a, w, 100, LIST);
    // A subscriber arrives now, when the list shows u1.
    f.subscribe(&room, SubscriberId(2), a.list(&room, LIST), 101);
    let w = a.untrack(&room, SocketId(2));
    feed(&mut f, &a, w, 105, LIST);
    let out = f.flush(120);
    let mut late = ClientView::default();
    deliver_to(&mut late, SubscriberId(2), &out);
    deliver_to(&mut old, SubscriberId(1), &out);
    let list = shown(&a.list(&room, LIST));
    assert_eq!(list.keys().collect::<Vec<_>>(), ["u0"]);
    assert_eq!(late.shown(), list, "the late subscriber does not keep u1 after it left");
    assert_eq!(old.shown(), list);
}

#[test]
fn a_subscriber_that_joins_between_a_leave_and_a_rejoin_in_one_window_ends_with_the_latest_metas() {
    let room = topic("room:1");
    let mut a = PresenceTable::new(inc("a", 1));
    track(&mut a, "room:1", "u1", 1, 1);
    let mut f = synced(&a, 0, LIST);
    let mut old = ClientView { state: shown(&a.list(&room, LIST)) };
    let w = a.untrack(&room, SocketId(1));
    feed(&mut f, &a, w, 100, LIST);
    // Arrives when u1 is gone.
    f.subscribe(&room, SubscriberId(2), a.list(&room, LIST), 101);
    // The same ref comes back (a peer's snapshot after it was declared down); then, still in
    // the window, its user updates its metas (a new ref, as `presence:update` makes).
    let w = track(&mut a, "room:1", "u1", 1, 1);
    feed(&mut f, &a, w, 105, LIST);
    let w = a.update(&room, SocketId(1), meta(&[("status", name("away"))]), phx(2));
    feed(&mut f, &a, w, 106, LIST);
    let out = f.flush(120);
    let mut late = ClientView::default();
    deliver_to(&mut late, SubscriberId(2), &out);
    deliver_to(&mut old, SubscriberId(1), &out);
    let list = shown(&a.list(&room, LIST));
    assert_eq!(list["u1"].len(), 1);
    assert_eq!(list["u1"][0].get("status"), Some(&name("away")));
    assert_eq!(ref_of(&list["u1"][0]), phx(2).as_str().to_owned());
    assert_eq!(late.shown(), list, "the late subscriber shows u1, with its new metas");
    assert_eq!(old.shown(), list);
}

#[test]
fn subscribers_that_join_while_the_anonymous_count_moves_end_on_the_final_count() {
    let room = topic("room:1");
    let mut a = PresenceTable::new(inc("a", 1));
    track(&mut a, "room:1", "anonymous", 1, 1);
    track(&mut a, "room:1", "anonymous", 2, 2);
    let mut f = synced(&a, 0, COUNT);
    let mut old = ClientView { state: shown(&a.list(&room, COUNT)) };
    let w = track(&mut a, "room:1", "anonymous", 3, 3);
    feed(&mut f, &a, w, 100, COUNT);
    // One arrives when the count is 3 ...
    f.subscribe(&room, SubscriberId(2), a.list(&room, COUNT), 100);
    let w = track(&mut a, "room:1", "anonymous", 4, 4);
    feed(&mut f, &a, w, 101, COUNT);
    // ... one when it is 4; then it goes back to 3.
    f.subscribe(&room, SubscriberId(3), a.list(&room, COUNT), 101);
    let w = a.untrack(&room, SocketId(4));
    feed(&mut f, &a, w, 102, COUNT);
    let out = f.flush(120);
    let (mut late, mut later) = (ClientView::default(), ClientView::default());
    deliver_to(&mut old, SubscriberId(1), &out);
    deliver_to(&mut late, SubscriberId(2), &out);
    deliver_to(&mut later, SubscriberId(3), &out);
    let list = shown(&a.list(&room, COUNT));
    assert_eq!(list["anonymous"], vec![meta(&[("count", MetaValue::Int(3)), ("phx_ref", name("anonymous:3"))])]);
    assert_eq!(old.shown(), list, "a subscriber from before the window");
    assert_eq!(late.shown(), list, "a subscriber that arrived at anonymous:3");
    assert_eq!(later.shown(), list, "a subscriber that arrived at anonymous:4");
}

// ---- properties --------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Track { room: u8, user: u8, socket: u8, tab: bool, value: i64 },
    Update { room: u8, socket: u8, value: i64 },
    Untrack { room: u8, socket: u8 },
    UntrackConn { socket: u8 },
}

const ROOMS: u8 = 3;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..ROOMS, 0..4u8, 0..5u8, any::<bool>(), 0..100i64)
            .prop_map(|(room, user, socket, tab, value)| Op::Track { room, user, socket, tab, value }),
        1 => (0..ROOMS, 0..5u8, 0..100i64).prop_map(|(room, socket, value)| Op::Update { room, socket, value }),
        2 => (0..ROOMS, 0..5u8).prop_map(|(room, socket)| Op::Untrack { room, socket }),
        1 => (0..5u8).prop_map(|socket| Op::UntrackConn { socket }),
    ]
}

fn room(i: u8) -> Topic {
    topic(&format!("room:{i}"))
}

fn rooms() -> impl Iterator<Item = Topic> {
    (0..ROOMS).map(room)
}

/// A node that runs generated operations with fresh `phx_ref`s and a clock.
#[derive(Clone, Debug)]
struct Node {
    table: PresenceTable,
    boot: u128,
    refs: u128,
    clock: Millis,
}

impl Node {
    fn new(name: &str, boot: u128) -> Self {
        Self { table: PresenceTable::new(inc(name, boot)), boot, refs: 0, clock: 0 }
    }

    fn run(&mut self, op: &Op) -> LocalWrite {
        self.clock += 1;
        self.refs += 1;
        let fresh = PhxRef::from_number(((self.boot << 40) | self.refs) as u64);
        let value = |v: i64| meta(&[("v", MetaValue::Int(v))]);
        match *op {
            Op::Track { room: r, user, socket, tab, value: v } => {
                let key = if user == 0 { "anonymous".to_owned() } else { format!("u{user}") };
                let tab = tab.then(|| TabId::from(format!("tab{socket}")));
                self.table.track(room(r), key, SocketId(socket.into()), tab, value(v), self.clock, fresh)
            }
            Op::Update { room: r, socket, value: v } => {
                self.table.update(&room(r), SocketId(socket.into()), value(v), fresh)
            }
            Op::Untrack { room: r, socket } => self.table.untrack(&room(r), SocketId(socket.into())),
            Op::UntrackConn { socket } => self.table.untrack_conn(SocketId(socket.into())),
        }
    }
}

fn lists_of(t: &PresenceTable) -> Vec<(Shown, Shown)> {
    rooms().map(|r| (shown(&t.list(&r, LIST)), shown(&t.list(&r, COUNT)))).collect()
}

/// Each origin's deltas, coalesced by a [`DeltaBuffer`] that is flushed where `flush` says.
fn origin_deltas(node: &mut Node, ops: &[(Op, bool)]) -> Vec<Delta> {
    let mut buffer = DeltaBuffer::new(5);
    let mut out = Vec::new();
    for (op, flush) in ops {
        if let Some(d) = node.run(op).delta {
            out.extend(buffer.push(d, node.clock));
        }
        if *flush {
            out.extend(buffer.take());
        }
    }
    out.extend(buffer.take());
    out
}

/// Delivers every origin's deltas in its own order, interleaving origins as `order` says;
/// where `dups` says, re-delivers the delta just applied and the origin's first one.
fn deliver(deltas: &[Vec<Delta>], order: &[usize], dups: &[bool]) -> Result<PresenceTable, TestCaseError> {
    let mut r = PresenceTable::new(inc("r", 99));
    let mut next = vec![0; deltas.len()];
    let mut step = 0;
    loop {
        let pick = order.get(step).copied().unwrap_or(0);
        let Some(o) = (0..deltas.len()).map(|i| (pick + i) % deltas.len()).find(|&o| next[o] < deltas[o].len()) else {
            break;
        };
        let d = &deltas[o][next[o]];
        prop_assert!(r.apply_delta(d).is_ok(), "in-order delivery never needs a snapshot");
        if dups.get(step).copied().unwrap_or(false) {
            prop_assert!(r.apply_delta(d).unwrap().is_empty());
            prop_assert!(r.apply_delta(&deltas[o][0]).unwrap().is_empty());
        }
        next[o] += 1;
        step += 1;
    }
    Ok(r)
}

proptest! {
    #[test]
    fn merge_is_idempotent_and_insensitive_to_interleaving_of_origins(
        ops in prop::collection::vec(prop::collection::vec((op(), prop::bool::weighted(0.3)), 0..30), 3),
        order_a in prop::collection::vec(0..3usize, 0..90),
        order_b in prop::collection::vec(0..3usize, 0..90),
        dups in prop::collection::vec(any::<bool>(), 0..90),
    ) {
        let mut nodes: Vec<Node> = (0..3).map(|i| Node::new(&format!("n{i}"), i + 1)).collect();
        let deltas: Vec<Vec<Delta>> = nodes.iter_mut().zip(&ops).map(|(n, ops)| origin_deltas(n, ops)).collect();
        let r1 = deliver(&deltas, &order_a, &[])?;
        let r2 = deliver(&deltas, &order_b, &dups)?;
        let mut from_snapshots = PresenceTable::new(inc("s", 98));
        for n in &nodes {
            from_snapshots.apply_snapshot(n.table.snapshot());
        }
        prop_assert_eq!(lists_of(&r1), lists_of(&r2));
        prop_assert_eq!(lists_of(&r1), lists_of(&from_snapshots));
        prop_assert_eq!(r1.len(), nodes.iter().map(|n| n.table.len()).sum::<usize>());
    }
}

/// One event of the replication simulation.
#[derive(Clone, Debug)]
enum Step {
    /// A local write on origin 0..3, or on the receiver (3).
    Local(usize, Op),
    /// The origin's delta buffer is flushed to the link now.
    Flush(usize),
    /// The receiver gets the next message from the origin.
    Deliver(usize),
    /// The next message from the origin is lost.
    Lose(usize),
    /// The origin is declared down; the link comes back and the receiver asks for a snapshot.
    Down(usize),
    /// The origin restarts as a new incarnation (not declared down first).
    Restart(usize),
    /// Time passes: delta buffers and diff windows that are due flush.
    Tick(u8),
    /// A new subscriber of a room, in one of the [`VIEWS`] (modulo their number).
    Subscribe(u8, u8),
    /// The `n`th live subscriber (modulo their number) unsubscribes.
    Unsubscribe(u8),
    /// The `n`th live subscriber leaves and joins again at once (a new subscription).
    Rejoin(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..4usize, op()).prop_map(|(n, op)| Step::Local(n, op)),
        1 => (0..3usize).prop_map(Step::Flush),
        5 => (0..3usize).prop_map(Step::Deliver),
        1 => (0..3usize).prop_map(Step::Lose),
        1 => (0..3usize).prop_map(Step::Down),
        1 => (0..3usize).prop_map(Step::Restart),
        2 => (0..30u8).prop_map(Step::Tick),
        2 => (0..ROOMS, any::<u8>()).prop_map(|(r, v)| Step::Subscribe(r, v)),
        1 => any::<u8>().prop_map(Step::Unsubscribe),
        1 => any::<u8>().prop_map(Step::Rejoin),
    ]
}

#[derive(Clone, Debug)]
enum Msg {
    Delta(Delta),
    Chunk(SnapshotChunk),
}

struct Origin {
    node: Node,
    buffer: DeltaBuffer,
    link: VecDeque<Msg>,
}

/// A client of the receiver for each topic and view, fed every change as it happens.
#[derive(Default)]
struct Clients {
    views: BTreeMap<(Topic, usize), ClientView>,
}

impl Clients {
    fn apply(&mut self, topic: &Topic, view: usize, diff: &PresenceDiff) {
        self.views.entry((topic.clone(), view)).or_default().sync_diff(diff);
    }

    fn shown(&self, topic: &Topic, view: usize) -> Shown {
        self.views.get(&(topic.clone(), view)).map(ClientView::shown).unwrap_or_default()
    }
}

/// One subscriber of the receiver's fan-out: what phoenix.js holds once `presence_state` came.
struct Sub {
    topic: Topic,
    /// Which of the [`VIEWS`].
    view: usize,
    client: Option<ClientView>,
}

/// Three origins replicate to one receiver over lossy links; the receiver's clients get every
/// change raw, and its subscribers (who come and go) get what its [`Fanout`] sends them.
struct Sim {
    origins: Vec<Origin>,
    receiver: Node,
    chunk: usize,
    boots: u128,
    now: Millis,
    raw: Clients,
    /// One per view of [`VIEWS`].
    fanouts: Vec<Fanout<SubscriberId>>,
    subs: BTreeMap<SubscriberId, Sub>,
    next_sub: u64,
}

impl Sim {
    fn new(chunk: usize) -> Self {
        let origins = (0..3)
            .map(|i| Origin {
                node: Node::new(&format!("n{i}"), i + 1),
                buffer: DeltaBuffer::new(5),
                link: VecDeque::new(),
            })
            .collect();
        Self {
            origins,
            receiver: Node::new("r", 100),
            chunk,
            boots: 200,
            now: 0,
            raw: Clients::default(),
            fanouts: VIEWS.iter().map(|_| Fanout::new(20)).collect(),
            subs: BTreeMap::new(),
            next_sub: 0,
        }
    }

    /// A new subscriber of `topic` in the view `VIEWS[view]`, now.
    fn subscribe(&mut self, topic: Topic, view: usize) {
        self.next_sub += 1;
        let id = SubscriberId(self.next_sub);
        let list = self.receiver.table.list(&topic, VIEWS[view]);
        self.fanouts[view].subscribe(&topic, id, list, self.now);
        self.subs.insert(id, Sub { topic, view, client: None });
    }

    /// The `pick`th live subscriber unsubscribes; returns its topic and view.
    fn unsubscribe(&mut self, pick: u8) -> Result<Option<(Topic, usize)>, TestCaseError> {
        let Some(id) = self.subs.keys().nth(usize::from(pick) % self.subs.len().max(1)).copied() else {
            return Ok(None);
        };
        let sub = self.subs.remove(&id).expect("picked");
        let fanout = &mut self.fanouts[sub.view];
        prop_assert!(fanout.unsubscribe(&sub.topic, id), "{:?} was subscribed", id);
        Ok(Some((sub.topic, sub.view)))
    }

    fn run(&mut self, step: &Step) -> Result<(), TestCaseError> {
        match step {
            Step::Local(3, op) => {
                let w = self.receiver.run(op);
                self.observe(w.changes)?;
            }
            Step::Local(o, op) => {
                let origin = &mut self.origins[*o];
                if let Some(d) = origin.node.run(op).delta {
                    let flushed = origin.buffer.push(d, self.now);
                    origin.link.extend(flushed.map(Msg::Delta));
                }
            }
            Step::Flush(o) => {
                let origin = &mut self.origins[*o];
                origin.link.extend(origin.buffer.take().map(Msg::Delta));
            }
            Step::Deliver(o) => {
                if let Some(msg) = self.origins[*o].link.pop_front() {
                    self.receive(*o, msg)?;
                }
            }
            Step::Lose(o) => {
                self.origins[*o].link.pop_front();
            }
            Step::Down(o) => {
                // By name: the receiver may still hold a previous incarnation of the node.
                let node = self.origins[*o].node.table.origin().node.clone();
                let expected = self.shown_refs_of(&node);
                let dropped = self.receiver.table.drop_node(&node);
                prop_assert_eq!(dropped.joins().count(), 0);
                let left: BTreeSet<String> =
                    dropped.leaves().map(|(_, _, m)| m.phx_ref().as_str().to_owned()).collect();
                prop_assert_eq!(left, expected, "drop_origin leaves exactly that origin's entries");
                self.observe(dropped)?;
                self.origins[*o].link.clear();
                self.send_snapshot(*o);
            }
            Step::Restart(o) => {
                self.boots += 1;
                let name = self.origins[*o].node.table.origin().node.as_str().to_owned();
                self.origins[*o] =
                    Origin { node: Node::new(&name, self.boots), buffer: DeltaBuffer::new(5), link: VecDeque::new() };
                self.send_snapshot(*o);
            }
            Step::Tick(ms) => {
                self.now += Millis::from(*ms);
                for origin in &mut self.origins {
                    origin.link.extend(origin.buffer.flush(self.now).map(Msg::Delta));
                }
                self.flush_fanouts(false)?;
            }
            Step::Subscribe(r, v) => self.subscribe(room(*r), usize::from(*v) % VIEWS.len()),
            Step::Unsubscribe(pick) => {
                self.unsubscribe(*pick)?;
            }
            Step::Rejoin(pick) => {
                if let Some((topic, view)) = self.unsubscribe(*pick)? {
                    self.subscribe(topic, view);
                }
            }
        }
        self.check_invariants()
    }

    /// Everything still in flight is delivered, and a receiver behind an origin's announced
    /// sequence number asks for its snapshot (as heartbeats would let it), until quiet.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        loop {
            for origin in &mut self.origins {
                origin.link.extend(origin.buffer.take().map(Msg::Delta));
            }
            while let Some(o) = (0..3).find(|&o| !self.origins[o].link.is_empty()) {
                let msg = self.origins[o].link.pop_front().unwrap();
                self.receive(o, msg)?;
            }
            let behind: Vec<usize> = (0..3)
                .filter(|&o| {
                    let t = &self.origins[o].node.table;
                    self.receiver.table.applied_seq(t.origin()) != Some(t.seq())
                })
                .collect();
            if behind.is_empty() {
                break;
            }
            for o in behind {
                self.send_snapshot(o);
            }
        }
        self.flush_fanouts(true)?;
        prop_assert!(self.subs.values().all(|s| s.client.is_some()), "every subscriber got its state");
        let mut expected = PresenceTable::new(inc("e", 999));
        for origin in &self.origins {
            expected.apply_snapshot(origin.node.table.snapshot());
        }
        expected.apply_snapshot(self.receiver.table.snapshot());
        prop_assert_eq!(lists_of(&self.receiver.table), lists_of(&expected), "converged");
        Ok(())
    }

    fn receive(&mut self, o: usize, msg: Msg) -> Result<(), TestCaseError> {
        let changes = match msg {
            Msg::Delta(d) => match self.receiver.table.apply_delta(&d) {
                Ok(changes) => changes,
                Err(need) => {
                    prop_assert_eq!(&need.origin, &d.origin);
                    self.send_snapshot(o);
                    return Ok(());
                }
            },
            Msg::Chunk(c) => self.receiver.table.apply_snapshot_chunk(c).unwrap_or_default(),
        };
        self.observe(changes)
    }

    /// The origin answers a snapshot request: its pending delta first, then the snapshot.
    fn send_snapshot(&mut self, o: usize) {
        let origin = &mut self.origins[o];
        origin.link.extend(origin.buffer.take().map(Msg::Delta));
        origin.link.extend(origin.node.table.snapshot_chunks(self.chunk, usize::MAX).into_iter().map(Msg::Chunk));
    }

    fn observe(&mut self, changes: PresenceChanges) -> Result<(), TestCaseError> {
        for (topic, c) in changes.iter() {
            for (view, presence_view) in VIEWS.iter().enumerate() {
                let diff = c.to_diff(*presence_view);
                let both: Vec<&String> = diff.joins.keys().filter(|k| diff.leaves.contains_key(*k)).collect();
                for key in both {
                    let joined: BTreeSet<String> = diff.joins[key].metas.iter().map(ref_of).collect();
                    prop_assert!(diff.leaves[key].metas.iter().all(|m| !joined.contains(&ref_of(m))));
                }
                self.raw.apply(topic, view, &diff);
            }
        }
        // As the runtime's node actor feeds its shards: each change with a placeholder list,
        // then each changed topic's list once, after the last of them (`Fanout::latest`).
        for (fanout, view) in self.fanouts.iter_mut().zip(VIEWS) {
            for (topic, c) in changes.iter() {
                fanout.changes(topic, c.clone(), PresenceList::default(), self.now);
            }
            for (topic, _) in changes.iter() {
                fanout.latest(topic, self.receiver.table.list(topic, view));
            }
        }
        for r in rooms() {
            for (view, presence_view) in VIEWS.iter().enumerate() {
                let snapshot = self.receiver.table.list(&r, *presence_view);
                let json = serde_json::to_string(&snapshot).unwrap();
                prop_assert_eq!(json, serde_json::to_string(&snapshot.to_map()).unwrap());
                let list = shown(&snapshot);
                prop_assert_eq!(&self.raw.shown(&r, view), &list, "raw diffs on {} ({:?})", r, view);
            }
        }
        Ok(())
    }

    /// Closes the windows that are due (or all), hands every subscriber what the fan-out sends
    /// it, and checks that each subscriber of a topic with no open window sees exactly the list.
    fn flush_fanouts(&mut self, all: bool) -> Result<(), TestCaseError> {
        for fanout in &mut self.fanouts {
            let out = if all { fanout.flush_all() } else { fanout.flush(self.now) };
            for delivery in out {
                match delivery {
                    Delivery::State { topic, state, to } => {
                        for id in to {
                            let sub = self.subs.get_mut(&id);
                            prop_assert!(sub.is_some(), "state for {:?}, not subscribed", id);
                            let sub = sub.unwrap();
                            prop_assert_eq!(&sub.topic, &topic);
                            prop_assert!(sub.client.is_none(), "a second presence_state for {:?}", id);
                            let json = serde_json::to_string(&state).unwrap();
                            prop_assert_eq!(json, serde_json::to_string(&state.to_map()).unwrap());
                            sub.client =
                                Some(ClientView { state: state.iter().map(|(k, m)| (k.to_owned(), m)).collect() });
                        }
                    }
                    Delivery::Diff { topic, diff, to } => {
                        for id in to {
                            let sub = self.subs.get_mut(&id);
                            prop_assert!(sub.is_some(), "diff for {:?}, not subscribed", id);
                            let sub = sub.unwrap();
                            prop_assert_eq!(&sub.topic, &topic);
                            let client = sub.client.as_mut();
                            prop_assert!(client.is_some(), "a diff before the presence_state of {:?}", id);
                            if let Err(e) = client.unwrap().strict_diff(&diff) {
                                return Err(TestCaseError::fail(format!("{id:?} on {topic}: {e}")));
                            }
                        }
                    }
                }
            }
        }
        for (id, sub) in &self.subs {
            if self.fanouts[sub.view].is_pending(&sub.topic) {
                continue;
            }
            let list = shown(&self.receiver.table.list(&sub.topic, VIEWS[sub.view]));
            let client = sub.client.as_ref();
            prop_assert!(client.is_some(), "{:?} has no state and no window is open", id);
            prop_assert_eq!(&client.unwrap().shown(), &list, "{:?} on {} ({:?})", id, sub.topic, sub.view);
        }
        Ok(())
    }

    fn shown_refs_of(&self, node: &NodeName) -> BTreeSet<String> {
        rooms()
            .flat_map(|r| self.receiver.table.list(&r, LIST).to_map().into_values())
            .flat_map(|l| l.metas)
            .filter(|m| m.get("node") == Some(&MetaValue::Str(node.as_str().to_owned())))
            .map(|m| ref_of(&m))
            .collect()
    }

    fn check_invariants(&self) -> Result<(), TestCaseError> {
        let t = &self.receiver.table;
        let per_topic: usize = t.topics().map(|topic| t.count(topic)).sum();
        prop_assert_eq!(per_topic, t.len());
        prop_assert!(t.topics().all(|topic| t.count(topic) > 0));
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    /// Joins, leaves, meta updates, lost and duplicated deltas, peers declared down, restarts,
    /// snapshot resyncs, and subscribers that come, go and rejoin at any moment: every client
    /// fed each change raw, and every subscriber fed only what the fan-out sends it (its
    /// `presence_state`, then the window diffs, applied as phoenix.js does and refused on a
    /// duplicate join or a leave of what it does not hold), sees exactly the list.
    #[test]
    fn every_subscribers_state_and_diffs_compose_to_the_list(
        steps in prop::collection::vec(step(), 0..120),
        chunk in 1..4usize,
    ) {
        let mut sim = Sim::new(chunk);
        for r in 0..ROOMS {
            for view in 0..VIEWS.len() {
                sim.subscribe(room(r), view);
            }
        }
        for step in &steps {
            sim.run(step)?;
        }
        sim.settle()?;
    }
}
