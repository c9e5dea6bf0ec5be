use super::*;
use crate::ids::{Incarnation, SocketId};
use proptest::prelude::*;
use std::collections::{BTreeMap, VecDeque};

fn gw(n: u8) -> Incarnation {
    Incarnation::new(format!("n{n}").as_str(), n as u128)
}

fn conn(g: u8, s: u64) -> ConnId {
    ConnId { gateway: gw(g), socket: SocketId(s) }
}

fn tab(t: &str) -> Option<TabId> {
    Some(TabId::from(t))
}

fn rules(on_conflict: OnConflict) -> SlotRules {
    SlotRules { on_conflict, ..SlotRules::default() }
}

fn granted(fx: &[SlotEffect]) -> Vec<(ConnId, SlotToken)> {
    fx.iter()
        .filter_map(|e| match e {
            SlotEffect::Grant { conn, token, .. } => Some((conn.clone(), *token)),
            _ => None,
        })
        .collect()
}

fn token_of(fx: &[SlotEffect]) -> SlotToken {
    granted(fx)[0].1
}

#[test]
fn first_join_is_granted_with_the_mints_first_token() {
    let (mut s, mut m) = (ScopeSlots::new(), TokenMint::new(7));
    let fx = s.join(conn(1, 1), tab("a"), None, &rules(OnConflict::Takeover), &mut m, 0);
    assert_eq!(
        fx,
        vec![SlotEffect::Grant {
            conn: conn(1, 1),
            tab: TabKey::Tab("a".into()),
            token: SlotToken { epoch: 7, generation: 1 },
            resumed: false
        }]
    );
}

#[test]
fn takeover_revokes_the_old_tab_first_and_grants_only_on_confirmation() {
    let r = rules(OnConflict::Takeover);
    let (mut s, mut m) = (ScopeSlots::new(), TokenMint::new(1));
    let old = token_of(&s.join(conn(1, 1), tab("a"), None, &r, &mut m, 0));
    let fx = s.join(conn(2, 1), tab("b"), None, &r, &mut m, 10);
    assert_eq!(fx, vec![SlotEffect::Revoke { conn: conn(1, 1), token: old, reason: RevokeReason::LoggedInElsewhere }]);
    assert!(s.holds(old), "the old slot counts until its gateway confirms");
    let fx = s.released(&conn(1, 1), old, true, &r, &mut m, 20);
    let g = granted(&fx);
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].0, conn(2, 1));
    assert!(g[0].1 > old);
    assert_eq!(s.tabs_counted(), vec![TabKey::Tab("b".into())]);
}

#[test]
fn reject_policy_answers_already_joined() {
    let r = rules(OnConflict::Reject);
    let (mut s, mut m) = (ScopeSlots::new(), TokenMint::new(1));
    s.join(conn(1, 1), tab("a"), None, &r, &mut m, 0);
    let fx = s.join(conn(1, 2), tab("b"), None, &r, &mut m, 1);
    assert_eq!(fx, vec![SlotEffect::Reject { conn: conn(1, 2), reason: RejectReason::AlreadyJoined }]);
}

#[test]
fn wait_policy_grants_when_the_holder_leaves_in_time() {
    let r = SlotRules { wait_ms: 1000, ..rules(OnConflict::Wait) };
    let (mut s, mut m) = (ScopeSlots::new(), TokenMint::new(1));
    let t = token_of(&s.join(conn(1, 1), tab("a"), None, &r, &mut m, 0));
    assert!(s.join(conn(1, 2), tab("b"), None, &r, &mut m, 0).is_empty());
    assert_eq!(s.next_deadline(), Some(1000));
    let fx = s.released(&conn(1, 1), t, true, &r, &mut m, 500);
    assert_eq!(granted(&fx)[0].0, conn(1, 2));
}

#[test]
fn wait_policy_times_out_at_wait_ms() {
    let r = SlotRules { wait_ms: 1000, ..rules(OnConflict::Wait) };
    let (mut s, mut m) = (ScopeSlots::new(), TokenMint::new(1));
    s.join(conn(1, 1), tab("a"), None, &r, &mut m, 0);
    s.join(conn(1, 2), tab("b"), None, &r, &mut m, 0);
    assert!(s.tick(&r, &mut m, 999).is_empty());
    let fx = s.tick(&r, &mut m, 1000);
    assert_eq!(fx, vec![SlotEffect::Reject { conn: conn(1, 2), reason: RejectReason::WaitTimedOut }]);
    assert_eq!(s.waiting(), 0);
}

#[test]
fn same_tab_on_a_new_socket_resumes_at_once_and_closes_the_old_one() {
    for policy in [OnConflict::Takeover, OnConflict::Reject, OnConflict::Wait] {
        let r = rules(policy);
        let (mut s, mut m) = (ScopeSlots::new(), TokenMint::new(1));
        let old = token_of(&s.join(conn(1, 1), tab("a"), None, &r, &mut m, 0));
        let fx = s.join(conn(2, 9), tab("a"), None, &r, &mut m, 5);
        assert_eq!(fx[0], SlotEffect::Close { conn: conn(1, 1), token: old });
        assert!(matches!(&fx[1], SlotEffect::Grant { conn: c, resumed: true, .. } if *c == conn(2, 9)));
        assert_eq!(s.records()[0].state(), SlotState::Replaced, "the replaced record stays (rule 7)");
        assert_eq!(s.tabs_counted().len(), 1);
    }
}

#[test]
fn a_takeover_waits_for_the_replaced_record_of_a_resumed_tab() {
    let r = rules(OnConflict::Takeover);
    let (mut s, mut m) = (ScopeSlots::new(), TokenMint::new(1));
    let a1 = token_of(&s.join(conn(1, 1), tab("a"), None, &r, &mut m, 0));
    let a2 = granted(&s.join(conn(2, 1), tab("a"), None, &r, &mut m, 1))[0].1;
    let fx = s.join(conn(3, 1), tab("b"), None, &r, &mut m, 2);
    assert_eq!(fx, vec![SlotEffect::Revoke { conn: conn(2, 1), token: a2, reason: RevokeReason::LoggedInElsewhere }]);
    assert!(granted(&s.released(&conn(2, 1), a2, true, &r, &mut m, 3)).is_empty(), "A@n1 is not confirmed closed");
    let fx = s.released(&conn(1, 1), a1, true, &r, &mut m, 4);
    assert_eq!(granted(&fx)[0].0, conn(3, 1));
}

#[test]
fn same_tab_on_the_same_socket_shares_the_slot() {
    let r = rules(OnConflict::Reject);
    let (mut s, mut m) = (ScopeSlots::new(), TokenMint::new(1));
    let t = token_of(&s.join(conn(1, 1), tab("a"), None, &r, &mut m, 0));
    let fx = s.join(conn(1, 1), tab("a"), None, &r, &mut m, 1);
    assert_eq!(granted(&fx), vec![(conn(1, 1), t)]);
    assert_eq!(s.records().len(), 1);
}

#[test]
fn reserve_keeps_the_slot_for_the_same_tab_after_an_unclean_drop() {
    let r = SlotRules { reserve_ms: 3000, ..rules(OnConflict::Reject) };
    let (mut s, mut m) = (ScopeSlots::new(), TokenMint::new(1));
    let t = token_of(&s.join(conn(1, 1), tab("a"), None, &r, &mut m, 0));
    assert!(s.released(&conn(1, 1), t, false, &r, &mut m, 100).is_empty());
    assert_eq!(s.records()[0].state(), SlotState::Reserved { until: 3100 });
    let other = s.join(conn(1, 2), tab("b"), None, &r, &mut m, 200);
    assert_eq!(other, vec![SlotEffect::Reject { conn: conn(1, 2), reason: RejectReason::AlreadyJoined }]);
    let back = s.join(conn(1, 3), tab("a"), None, &r, &mut m, 300);
    assert!(matches!(&back[..], [SlotEffect::Grant { resumed: true, .. }]), "{back:?}");
    assert_eq!(s.records().len(), 1);
}

#[test]
fn a_reservation_lapses_at_reserve_ms() {
    let r = SlotRules { reserve_ms: 3000, ..rules(OnConflict::Reject) };
    let (mut s, mut m) = (ScopeSlots::new(), TokenMint::new(1));
    let t = token_of(&s.join(conn(1, 1), tab("a"), None, &r, &mut m, 0));
    s.released(&conn(1, 1), t, false, &r, &mut m, 100);
    assert!(s.tick(&r, &mut m, 3099).is_empty());
    assert_eq!(s.tick(&r, &mut m, 3100), vec![SlotEffect::Freed { conn: conn(1, 1), token: t }]);
    assert!(s.is_idle());
}

#[test]
fn takeover_of_a_reservation_needs_no_confirmation() {
    let r = SlotRules { reserve_ms: 3000, ..rules(OnConflict::Takeover) };
    let (mut s, mut m) = (ScopeSlots::new(), TokenMint::new(1));
    let t = token_of(&s.join(conn(1, 1), tab("a"), None, &r, &mut m, 0));
    s.released(&conn(1, 1), t, false, &r, &mut m, 100);
    let fx = s.join(conn(1, 2), tab("b"), None, &r, &mut m, 200);
    assert_eq!(granted(&fx)[0].0, conn(1, 2));
}

#[test]
fn a_clean_leave_never_reserves() {
    let r = SlotRules { reserve_ms: 3000, ..rules(OnConflict::Reject) };
    let (mut s, mut m) = (ScopeSlots::new(), TokenMint::new(1));
    let t = token_of(&s.join(conn(1, 1), tab("a"), None, &r, &mut m, 0));
    s.released(&conn(1, 1), t, true, &r, &mut m, 100);
    assert!(s.is_idle());
}

#[test]
fn exempt_roles_skip_the_slot_check() {
    let r = SlotRules { exempt_roles: vec![Role::from("admin")], ..rules(OnConflict::Reject) };
    let (mut s, mut m) = (ScopeSlots::new(), TokenMint::new(1));
    s.join(conn(1, 1), tab("a"), None, &r, &mut m, 0);
    let fx = s.join(conn(1, 2), tab("b"), Some(&Role::from("admin")), &r, &mut m, 1);
    assert_eq!(granted(&fx).len(), 1);
    assert_eq!(s.records().len(), 1, "an exempt join holds no slot");
}

#[test]
fn max_slots_two_admits_exactly_two_tabs() {
    let r = SlotRules { max_slots: 2, ..rules(OnConflict::Reject) };
    let (mut s, mut m) = (ScopeSlots::new(), TokenMint::new(1));
    assert_eq!(granted(&s.join(conn(1, 1), tab("a"), None, &r, &mut m, 0)).len(), 1);
    assert_eq!(granted(&s.join(conn(1, 2), tab("b"), None, &r, &mut m, 0)).len(), 1);
    let third = s.join(conn(1, 3), tab("c"), None, &r, &mut m, 0);
    assert_eq!(third, vec![SlotEffect::Reject { conn: conn(1, 3), reason: RejectReason::AlreadyJoined }]);
}

#[test]
fn joins_without_tab_id_are_each_a_new_tab() {
    let r = rules(OnConflict::Reject);
    let (mut s, mut m) = (ScopeSlots::new(), TokenMint::new(1));
    s.join(conn(1, 1), None, None, &r, &mut m, 0);
    let fx = s.join(conn(1, 2), None, None, &r, &mut m, 0);
    assert_eq!(fx, vec![SlotEffect::Reject { conn: conn(1, 2), reason: RejectReason::AlreadyJoined }]);
}

#[test]
fn an_in_doubt_slot_makes_conflicting_joins_wait_then_frees_at_its_deadline() {
    for policy in [OnConflict::Takeover, OnConflict::Reject, OnConflict::Wait] {
        let r = rules(policy);
        let (mut s, mut m) = (ScopeSlots::new(), TokenMint::new(1));
        let t = token_of(&s.join(conn(1, 1), tab("a"), None, &r, &mut m, 0));
        s.gateway_unheard(&gw(1), 4000);
        let fx = s.join(conn(2, 1), tab("b"), None, &r, &mut m, 100);
        assert!(fx.is_empty(), "{policy:?}: neither rejected nor taken over: {fx:?}");
        assert!(s.tick(&r, &mut m, 3999).is_empty());
        let fx = s.tick(&r, &mut m, 4000);
        assert_eq!(fx[0], SlotEffect::Freed { conn: conn(1, 1), token: t });
        assert_eq!(granted(&fx[1..])[0].0, conn(2, 1), "{policy:?}");
    }
}

#[test]
fn an_in_doubt_tab_still_resumes_at_once() {
    let r = rules(OnConflict::Reject);
    let (mut s, mut m) = (ScopeSlots::new(), TokenMint::new(1));
    s.join(conn(1, 1), tab("a"), None, &r, &mut m, 0);
    s.gateway_unheard(&gw(1), 4000);
    let fx = s.join(conn(2, 1), tab("a"), None, &r, &mut m, 10);
    assert!(matches!(fx.last(), Some(SlotEffect::Grant { resumed: true, .. })));
}

#[test]
fn a_gateway_heard_again_is_no_longer_in_doubt() {
    let r = rules(OnConflict::Reject);
    let (mut s, mut m) = (ScopeSlots::new(), TokenMint::new(1));
    s.join(conn(1, 1), tab("a"), None, &r, &mut m, 0);
    s.gateway_unheard(&gw(1), 4000);
    s.gateway_heard(&gw(1));
    assert!(s.tick(&r, &mut m, 5000).is_empty());
    assert_eq!(s.records().len(), 1);
}

#[test]
fn a_newer_takeover_supersedes_a_pending_one() {
    let r = rules(OnConflict::Takeover);
    let (mut s, mut m) = (ScopeSlots::new(), TokenMint::new(1));
    let t = token_of(&s.join(conn(1, 1), tab("a"), None, &r, &mut m, 0));
    s.join(conn(1, 2), tab("b"), None, &r, &mut m, 1);
    let fx = s.join(conn(1, 3), tab("c"), None, &r, &mut m, 2);
    assert_eq!(fx, vec![SlotEffect::Reject { conn: conn(1, 2), reason: RejectReason::LoggedInElsewhere }]);
    let fx = s.released(&conn(1, 1), t, true, &r, &mut m, 3);
    assert_eq!(granted(&fx)[0].0, conn(1, 3));
}

#[test]
fn kick_revokes_every_held_slot() {
    let r = SlotRules { max_slots: 2, ..rules(OnConflict::Reject) };
    let (mut s, mut m) = (ScopeSlots::new(), TokenMint::new(1));
    s.join(conn(1, 1), tab("a"), None, &r, &mut m, 0);
    s.join(conn(1, 2), tab("b"), None, &r, &mut m, 0);
    let fx = s.kick("banned");
    assert_eq!(fx.len(), 2);
    assert!(fx
        .iter()
        .all(|e| matches!(e, SlotEffect::Revoke { reason: RevokeReason::Kicked(r), .. } if r == "banned")));
}

#[test]
fn a_tab_granted_while_it_is_being_revoked_keeps_one_connection_that_is_not_closing() {
    let r = rules(OnConflict::Takeover);
    let (mut s, mut m) = (ScopeSlots::new(), TokenMint::new(1));
    let a1 = token_of(&s.join(conn(1, 1), tab("a"), None, &r, &mut m, 0));
    // B's takeover revokes tab a and waits for the confirmation.
    s.join(conn(2, 1), tab("b"), None, &r, &mut m, 10);
    // Tab a comes back twice on other sockets before its revoke is confirmed: it still counts,
    // so each join is granted, and the second grant closes the first.
    let a2 = token_of(&s.join(conn(2, 2), tab("a"), None, &r, &mut m, 20));
    let fx = s.join(conn(3, 1), tab("a"), None, &r, &mut m, 30);
    assert_eq!(fx[0], SlotEffect::Close { conn: conn(2, 2), token: a2 });
    assert!(matches!(&fx[1], SlotEffect::Grant { conn: c, resumed: true, .. } if *c == conn(3, 1)));
    let held: Vec<&SlotRecord> = s.records().iter().filter(|r| r.state() == SlotState::Held).collect();
    assert_eq!(held.len(), 1, "one held connection for tab a: {:?}", s.records());
    assert!(s.records().iter().any(|r| r.token == a1 && r.state() == SlotState::Revoking));
}

#[test]
fn an_unheard_gateway_loses_its_waiting_joins() {
    let r = rules(OnConflict::Takeover);
    let (mut s, mut m) = (ScopeSlots::new(), TokenMint::new(1));
    let a = token_of(&s.join(conn(1, 1), tab("a"), None, &r, &mut m, 0));
    s.join(conn(2, 1), tab("b"), None, &r, &mut m, 10);
    assert_eq!(s.waiting(), 1);
    // B's gateway goes unheard (it died): its join must never be granted.
    s.gateway_unheard(&gw(2), 5000);
    assert_eq!(s.waiting(), 0);
    let fx = s.released(&conn(1, 1), a, true, &r, &mut m, 20);
    assert!(granted(&fx).is_empty(), "{fx:?}");
    assert!(s.is_idle());
}

/// One step of a random history against one home.
#[derive(Clone, Debug)]
enum Op {
    Join {
        gw: u8,
        socket: u64,
        tab: Option<u8>,
    },
    /// The gateway confirms the oldest outstanding revoke or close.
    Confirm,
    /// A connection drops (clean or not).
    Drop {
        pick: usize,
        clean: bool,
    },
    Unheard {
        gw: u8,
    },
    Heard {
        gw: u8,
    },
    Advance {
        ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3, 0u64..6, proptest::option::of(0u8..4)).prop_map(|(gw, socket, tab)| Op::Join { gw, socket, tab }),
        3 => Just(Op::Confirm),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, clean)| Op::Drop { pick, clean }),
        1 => (0u8..3).prop_map(|gw| Op::Unheard { gw }),
        1 => (0u8..3).prop_map(|gw| Op::Heard { gw }),
        2 => (0u64..3000).prop_map(|ms| Op::Advance { ms }),
    ]
}

fn policy() -> impl Strategy<Value = SlotRules> {
    (
        1u32..3,
        prop_oneof![Just(OnConflict::Takeover), Just(OnConflict::Reject), Just(OnConflict::Wait)],
        prop_oneof![Just(0u64), Just(2000)],
    )
        .prop_map(|(max_slots, on_conflict, reserve_ms)| SlotRules {
            max_slots,
            on_conflict,
            reserve_ms,
            wait_ms: 1500,
            join_wait_ms: 5000,
            ..SlotRules::default()
        })
}

proptest! {
    // The one-tab-one-connection invariant needs a takeover pending while its victim tab
    // comes back twice: 256 histories rarely build that, 4,096 do (in about 0.1 s).
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Whatever the history, the connections that gateways consider holding (granted and not
    /// yet released by the gateway, nor expired as unreachable) never carry more than
    /// `max_slots` distinct tabs, one tab stays on at most one connection (the others were told
    /// to close or are being revoked), and every new grant's token is larger than all before it.
    #[test]
    fn never_more_than_max_slots_tabs_hold_and_tokens_only_grow(rules in policy(), ops in proptest::collection::vec(op(), 1..80)) {
        let (mut s, mut m) = (ScopeSlots::new(), TokenMint::new(1));
        let mut now = 0;
        // What the gateways believe: conn -> (tab, token).
        let mut live: BTreeMap<(ConnId, TabKey), SlotToken> = BTreeMap::new();
        let mut outstanding: VecDeque<(ConnId, SlotToken)> = VecDeque::new();
        let mut unheard: Vec<Incarnation> = Vec::new();
        let mut last_token = SlotToken { epoch: 0, generation: 0 };
        for op in ops {
            let fx = match op {
                Op::Join { gw: g, socket, tab: t } => {
                    let c = conn(g, socket);
                    let t = t.map(|t| TabId::from(format!("t{t}")));
                    s.join(c, t, None, &rules, &mut m, now)
                }
                Op::Confirm => match outstanding.pop_front() {
                    Some((c, t)) => { live.retain(|(lc, _), lt| !(*lc == c && *lt == t)); s.released(&c, t, true, &rules, &mut m, now) }
                    None => vec![],
                },
                Op::Drop { pick, clean } if !live.is_empty() => {
                    let (key, t) = live.iter().nth(pick % live.len()).map(|(k, t)| (k.clone(), *t)).unwrap();
                    live.remove(&key);
                    let c = key.0;
                    s.released(&c, t, clean, &rules, &mut m, now)
                }
                Op::Drop { .. } => vec![],
                Op::Unheard { gw: g } => { unheard.push(gw(g)); s.gateway_unheard(&gw(g), now + 4000); vec![] }
                Op::Heard { gw: g } => { unheard.retain(|i| *i != gw(g)); s.gateway_heard(&gw(g)); vec![] }
                Op::Advance { ms } => { now += ms; s.tick(&rules, &mut m, now) }
            };
            for e in fx {
                match e {
                    SlotEffect::Grant { conn, tab, token, .. } => {
                        let key = (conn, tab);
                        if live.get(&key) != Some(&token) {
                            prop_assert!(token > last_token, "token {token} after {last_token}");
                            last_token = token;
                        }
                        live.insert(key, token);
                    }
                    SlotEffect::Revoke { conn, token, .. } | SlotEffect::Close { conn, token } => outstanding.push_back((conn, token)),
                    // The home only frees what it cannot reach when the gateway's horizon has
                    // surely passed: model that the gateway dropped it by then.
                    SlotEffect::Freed { conn, token } => { live.retain(|(lc, _), lt| !(*lc == conn && *lt == token)); }
                    SlotEffect::Reject { .. } => {}
                }
            }
            let mut tabs: Vec<&TabKey> = live.keys().map(|(_, t)| t).collect();
            tabs.sort();
            tabs.dedup();
            prop_assert!(tabs.len() <= rules.max_slots as usize, "{} tabs hold: {:?}", tabs.len(), live);
            // Rule 7: a tab holds on at most one connection that was not told to end.
            for t in &tabs {
                let staying: Vec<&ConnId> = live
                    .iter()
                    .filter(|((c, lt), tok)| lt == *t && !outstanding.contains(&(c.clone(), **tok)))
                    .map(|((c, _), _)| c)
                    .collect();
                prop_assert!(staying.len() <= 1, "tab {t:?} stays on {staying:?}: {live:?}");
            }
        }
    }
}

#[test]
fn a_record_serializes_as_the_five_fields_it_stands_for_and_reads_back_the_same() {
    // The record keeps its tab and deadlines compactly; what it encodes is unchanged.
    #[derive(serde::Serialize)]
    struct Fields {
        tab: TabKey,
        conn: ConnId,
        token: SlotToken,
        state: SlotState,
        in_doubt_until: Option<Millis>,
    }
    let (mut s, mut m) = (ScopeSlots::new(), TokenMint::new(3));
    let r = SlotRules { max_slots: 2, reserve_ms: 500, ..rules(OnConflict::Reject) };
    let a = token_of(&s.join(conn(1, 1), tab("t1"), None, &r, &mut m, 0));
    let b = token_of(&s.join(conn(2, 2), None, None, &r, &mut m, 0));
    s.released(&conn(1, 1), a, false, &r, &mut m, 100);
    s.gateway_unheard(&gw(2), 900);
    let want = [
        Fields {
            tab: TabKey::Tab("t1".into()),
            conn: conn(1, 1),
            token: a,
            state: SlotState::Reserved { until: 600 },
            in_doubt_until: None,
        },
        Fields {
            tab: TabKey::Conn(conn(2, 2)),
            conn: conn(2, 2),
            token: b,
            state: SlotState::Held,
            in_doubt_until: Some(900),
        },
    ];
    assert_eq!(serde_json::to_value(s.records()).unwrap(), serde_json::to_value(&want).unwrap());
    let back: Vec<SlotRecord> = serde_json::from_value(serde_json::to_value(s.records()).unwrap()).unwrap();
    assert_eq!(back, s.records());
    assert_eq!(back[1].tab(), TabKey::Conn(conn(2, 2)));
    assert_eq!((back[0].state(), back[1].in_doubt_until()), (SlotState::Reserved { until: 600 }, Some(900)));
    assert!(back[1].counts_for(&TabKey::Conn(conn(2, 2))) && !back[1].counts_for(&TabKey::Conn(conn(1, 1))));
}

/// The number of a scope's rules (`rules_id`, its keeper's, in the struct's padding) is not
/// part of a `ScopeSlots`'s encoding: the same four fields as before, whatever the number.
#[test]
fn a_scope_encodes_as_before_whatever_its_rules_number() {
    let (mut s, mut m) = (ScopeSlots::new(), TokenMint::new(3));
    let r = rules(OnConflict::Reject);
    s.join(conn(1, 1), tab("t1"), None, &r, &mut m, 0);
    let plain = serde_json::to_value(&s).unwrap();
    // Sorted: whether serde_json keeps the fields' order depends on the features other crates
    // of the workspace turn on (`preserve_order`).
    let mut keys: Vec<&String> = plain.as_object().expect("a struct").keys().collect();
    keys.sort();
    assert_eq!(keys, ["new_tabs_blocked", "pending", "records", "unsafe_switches"]);
    s.set_rules_id(7);
    assert_eq!(serde_json::to_value(&s).unwrap(), plain);
    let back: ScopeSlots = serde_json::from_value(plain).unwrap();
    assert_eq!((back.rules_id(), back.records()), (0, s.records()));
    assert_eq!(std::mem::size_of::<ScopeSlots>(), 56, "the number fits in the padding");
}

#[test]
fn a_records_reservation_and_doubt_share_one_deadline_without_mixing_them() {
    let token = SlotToken { epoch: 3, generation: 1 };
    let mut r = SlotRecord::new(TabKey::Tab(TabId::from("t")), conn(1, 1), token);
    assert_eq!((r.state(), r.in_doubt_until()), (SlotState::Held, None));
    r.set_in_doubt_until(Some(500));
    r.set_state(SlotState::Revoking);
    assert_eq!((r.state(), r.in_doubt_until()), (SlotState::Revoking, Some(500)), "a change of stage keeps the doubt");
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["in_doubt_until"], 500);
    assert_eq!(serde_json::from_value::<SlotRecord>(json).unwrap(), r);
    r.set_state(SlotState::Held);
    r.set_state(SlotState::Reserved { until: 900 });
    assert_eq!((r.state(), r.in_doubt_until()), (SlotState::Reserved { until: 900 }, None), "reserving ends the doubt");
    r.set_in_doubt_until(None);
    assert_eq!(r.state(), SlotState::Reserved { until: 900 }, "clearing a doubt keeps the reservation's deadline");
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!((json["state"]["Reserved"]["until"].as_u64(), json["in_doubt_until"].is_null()), (Some(900), true));
    assert_eq!(serde_json::from_value::<SlotRecord>(json.clone()).unwrap(), r);
    r.set_state(SlotState::Held);
    assert_eq!((r.state(), r.in_doubt_until()), (SlotState::Held, None), "the reservation's deadline is not a doubt");
    // An encoding of a reservation in doubt, which no record produces, is refused.
    let mut both = json;
    both["in_doubt_until"] = 700.into();
    assert!(serde_json::from_value::<SlotRecord>(both).is_err());
    assert_eq!(std::mem::size_of::<SlotRecord>(), 48);
}

/// A record keeps its deadline in seven bytes: every deadline up to 2^56 − 1 ms is kept
/// exactly and encodes as itself, one computed past it is kept as that bound (no clock gets
/// there: nothing is freed earlier than asked), and an encoding past it is refused.
#[test]
fn a_records_deadline_is_kept_exactly_up_to_its_bound_and_refused_past_it_when_decoded() {
    let token = SlotToken { epoch: 3, generation: 1 };
    let max = (1u64 << 56) - 1;
    for until in [0, 1, 255, 256, 1_764_950_000_123, 1 << 48, max - 1, max] {
        let mut r = SlotRecord::new(TabKey::Tab(TabId::from("t")), conn(1, 1), token);
        r.set_in_doubt_until(Some(until));
        assert_eq!(r.in_doubt_until(), Some(until));
        let back: SlotRecord = crate::codec::decode(&crate::codec::encode(&r).unwrap()).unwrap();
        assert_eq!((back.in_doubt_until(), &back), (Some(until), &r));
        r.set_in_doubt_until(None);
        r.set_state(SlotState::Reserved { until });
        assert_eq!(r.state(), SlotState::Reserved { until });
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["state"]["Reserved"]["until"].as_u64(), Some(until));
        assert_eq!(serde_json::from_value::<SlotRecord>(json).unwrap(), r);
    }
    let mut r = SlotRecord::new(TabKey::Conn(conn(1, 1)), conn(1, 1), token);
    r.set_in_doubt_until(Some(max + 1));
    assert_eq!(r.in_doubt_until(), Some(max), "past the bound: the bound");
    r.set_state(SlotState::Revoking);
    r.set_in_doubt_until(Some(u64::MAX));
    assert_eq!((r.state(), r.in_doubt_until()), (SlotState::Revoking, Some(max)));
    let mut json = serde_json::to_value(&r).unwrap();
    json["in_doubt_until"] = (max + 1).into();
    assert!(serde_json::from_value::<SlotRecord>(json.clone()).is_err(), "an in-doubt deadline past the bound");
    json["in_doubt_until"] = serde_json::Value::Null;
    json["state"] = serde_json::json!({ "Reserved": { "until": u64::MAX } });
    assert!(serde_json::from_value::<SlotRecord>(json.clone()).is_err(), "a reservation's past the bound");
    json["state"] = serde_json::json!({ "Reserved": { "until": max } });
    assert_eq!(serde_json::from_value::<SlotRecord>(json).unwrap().state(), SlotState::Reserved { until: max });
}

#[test]
fn a_scope_with_records_and_waiting_joins_encodes_both_as_sequences_and_decodes_equal() {
    let (mut s, mut m) = (ScopeSlots::new(), TokenMint::new(3));
    let r = SlotRules { max_slots: 2, ..rules(OnConflict::Wait) };
    s.join(conn(1, 1), tab("t1"), None, &r, &mut m, 0);
    s.join(conn(1, 2), tab("t2"), None, &r, &mut m, 0);
    s.join(conn(2, 3), tab("t3"), None, &r, &mut m, 0);
    assert_eq!((s.records().len(), s.waiting()), (2, 1));
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["records"].as_array().map(Vec::len), Some(2));
    assert_eq!(json["pending"].as_array().map(Vec::len), Some(1));
    let back: ScopeSlots = serde_json::from_value(json).unwrap();
    assert_eq!(back, s);
    let bytes = crate::codec::encode(&s).unwrap();
    assert_eq!(crate::codec::decode::<ScopeSlots>(&bytes).unwrap(), s);
    // Once the waiting join timed out: an empty sequence, and nothing else changed shape.
    s.tick(&r, &mut m, 1_000_000);
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["pending"].as_array().map(Vec::len), Some(0));
    assert_eq!(serde_json::from_value::<ScopeSlots>(json).unwrap(), s);
}
