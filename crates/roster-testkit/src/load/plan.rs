//! Who joins what: the sockets, their users, their topics and which of them close, computed
//! from a [`Scenario`] before any socket opens.
//!
//! Members are sockets `0..sockets`, user `<user_prefix><i>`. With `K` topics per socket and
//! rooms of `M`, layer `j < K` puts socket `s` in room `j × sockets/M + s/M`: each layer fills
//! `sockets/M` rooms with consecutive sockets, so a socket's `K` rooms are distinct and every
//! room has exactly `M` members. Watchers come after the members, `W` in each of the first
//! `R` rooms (user `w<room>.<i>`), one topic each. In every room the first
//! `round(close_fraction × M)` members (by position in the room) are the ones that close.

use crate::load::{LoadError, Scenario};

/// One socket's part.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SocketPlan {
    pub user: String,
    pub watcher: bool,
    pub closes: bool,
    /// Its memberships (indices into [`Plan::memberships`]).
    pub memberships: Vec<usize>,
    /// Its place among the sockets that join in the same stage (for `--join-rate`).
    pub join_rank: usize,
}

/// One membership: a socket in a topic.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct MembershipPlan {
    pub socket: usize,
    pub topic: usize,
}

/// The whole run's layout.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Plan {
    pub topics: Vec<String>,
    pub sockets: Vec<SocketPlan>,
    pub memberships: Vec<MembershipPlan>,
    /// Memberships of each topic.
    pub by_topic: Vec<Vec<usize>>,
    pub watcher_sockets: usize,
}

impl Plan {
    pub(crate) fn new(s: &Scenario) -> Result<Plan, LoadError> {
        let bad = |why: String| Err(LoadError::BadScenario(why));
        if s.sockets == 0 || s.room_size == 0 || s.topics_per_socket == 0 {
            return bad("--sockets, --room-size and --topics-per-socket must be at least 1".into());
        }
        if !s.sockets.is_multiple_of(s.room_size) {
            return bad(format!("--sockets {} is not a multiple of --room-size {}", s.sockets, s.room_size));
        }
        if !(0.0..=1.0).contains(&s.close_fraction) {
            return bad(format!("--close-fraction {} is not between 0 and 1", s.close_fraction));
        }
        let rooms_per_layer = s.sockets / s.room_size;
        let rooms = rooms_per_layer * s.topics_per_socket;
        let watched = s.watched_rooms.unwrap_or(rooms);
        if s.watchers > 0 && watched > rooms {
            return bad(format!("--watched-rooms {watched} is more than the {rooms} rooms"));
        }
        let topics: Vec<String> = (0..rooms).map(|t| format!("{}{t}", s.topic_prefix)).collect();
        let closing_per_room = (s.close_fraction * s.room_size as f64).round() as usize;
        let mut sockets = Vec::with_capacity(s.sockets + s.watchers * watched);
        let mut memberships = Vec::with_capacity(s.sockets * s.topics_per_socket + s.watchers * watched);
        let mut by_topic = vec![Vec::new(); rooms];
        for socket in 0..s.sockets {
            let mut mine = Vec::with_capacity(s.topics_per_socket);
            for layer in 0..s.topics_per_socket {
                let topic = layer * rooms_per_layer + socket / s.room_size;
                by_topic[topic].push(memberships.len());
                mine.push(memberships.len());
                memberships.push(MembershipPlan { socket, topic });
            }
            sockets.push(SocketPlan {
                user: format!("{}{socket}", s.user_prefix),
                watcher: false,
                closes: socket % s.room_size < closing_per_room,
                memberships: mine,
                join_rank: socket,
            });
        }
        let watchers_in = if s.watchers == 0 { 0 } else { watched };
        for (room, members) in by_topic.iter_mut().enumerate().take(watchers_in) {
            for i in 0..s.watchers {
                let socket = sockets.len();
                members.push(memberships.len());
                sockets.push(SocketPlan {
                    user: format!("w{room}.{i}"),
                    watcher: true,
                    closes: false,
                    memberships: vec![memberships.len()],
                    join_rank: room * s.watchers + i,
                });
                memberships.push(MembershipPlan { socket, topic: room });
            }
        }
        Ok(Plan { topics, sockets, memberships, by_topic, watcher_sockets: s.watchers * watchers_in })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn scenario(sockets: usize, room_size: usize, k: usize) -> Scenario {
        Scenario { sockets, room_size, topics_per_socket: k, ..Scenario::default() }
    }

    #[test]
    fn rooms_of_m_hold_consecutive_sockets_and_k_layers_give_distinct_topics() {
        let plan = Plan::new(&scenario(6, 3, 2)).unwrap();
        assert_eq!(plan.topics, ["room:0", "room:1", "room:2", "room:3"]);
        let topics_of = |s: usize| -> Vec<usize> {
            plan.sockets[s].memberships.iter().map(|&m| plan.memberships[m].topic).collect()
        };
        assert_eq!(topics_of(0), [0, 2]);
        assert_eq!(topics_of(4), [1, 3]);
        for members in &plan.by_topic {
            assert_eq!(members.len(), 3);
            let sockets: BTreeSet<usize> = members.iter().map(|&m| plan.memberships[m].socket).collect();
            assert_eq!(sockets.len(), 3);
        }
        assert_eq!(plan.sockets[5].user, "u5");
        assert_eq!(plan.watcher_sockets, 0);
    }

    #[test]
    fn watchers_join_the_first_rooms_and_never_close() {
        let s = Scenario { watchers: 2, watched_rooms: Some(1), close_fraction: 0.5, ..scenario(4, 2, 1) };
        let plan = Plan::new(&s).unwrap();
        assert_eq!(plan.sockets.len(), 6);
        assert_eq!(plan.watcher_sockets, 2);
        assert_eq!(plan.by_topic[0].len(), 4);
        assert_eq!(plan.by_topic[1].len(), 2);
        let w = &plan.sockets[5];
        assert!(w.watcher && !w.closes && w.user == "w0.1" && w.join_rank == 1);
        let closing: Vec<usize> = (0..6).filter(|&i| plan.sockets[i].closes).collect();
        assert_eq!(closing, [0, 2], "one member of each room of two closes");
    }

    #[test]
    fn close_fraction_rounds_per_room() {
        let plan = Plan::new(&Scenario { close_fraction: 0.25, ..scenario(20, 10, 1) }).unwrap();
        assert_eq!(plan.sockets.iter().filter(|s| s.closes).count(), 6, "round(2.5) = 3 per room");
        let all = Plan::new(&Scenario { close_fraction: 1.0, ..scenario(20, 10, 1) }).unwrap();
        assert!(all.sockets.iter().all(|s| s.closes));
    }

    #[test]
    fn impossible_layouts_are_refused_with_the_reason() {
        let msg = |s: Scenario| Plan::new(&s).unwrap_err().to_string();
        assert!(msg(scenario(10, 3, 1)).contains("not a multiple of --room-size 3"));
        assert!(msg(scenario(0, 3, 1)).contains("at least 1"));
        assert!(msg(Scenario { close_fraction: 1.5, ..scenario(3, 3, 1) }).contains("between 0 and 1"));
        assert!(msg(Scenario { watchers: 1, watched_rooms: Some(5), ..scenario(3, 3, 1) }).contains("more than"));
    }
}
