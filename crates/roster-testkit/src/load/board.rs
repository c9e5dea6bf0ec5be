//! The board the client tasks write to and the coordinator reads: one cell of atomics per
//! socket and per membership (a socket's join of one topic), times as microseconds since the
//! run's start. Clients only store; the coordinator only loads, so no lock is taken on the
//! hot path (the error tallies, written once per failure, take one).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

/// Where a socket is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum SocketState {
    Connecting = 0,
    Open = 1,
    /// The TCP connect or the WebSocket handshake failed.
    Failed = 2,
    /// Ended: by the server (see `close_code`) or by this client.
    Closed = 3,
}

/// Where a membership is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Membership {
    /// Not joined yet.
    Idle = 0,
    /// `phx_join` sent, no reply yet.
    Joining = 1,
    /// Joined: the node should list it.
    Joined = 2,
    /// The join was refused.
    Refused = 3,
    /// The server ended it: `phx_close`, `phx_error` or the socket closed by the server.
    Ended = 4,
    /// This client left it or closed its socket.
    Left = 5,
}

impl Membership {
    fn from_u8(v: u8) -> Membership {
        match v {
            1 => Membership::Joining,
            2 => Membership::Joined,
            3 => Membership::Refused,
            4 => Membership::Ended,
            5 => Membership::Left,
            _ => Membership::Idle,
        }
    }
}

impl SocketState {
    fn from_u8(v: u8) -> SocketState {
        match v {
            1 => SocketState::Open,
            2 => SocketState::Failed,
            3 => SocketState::Closed,
            _ => SocketState::Connecting,
        }
    }
}

/// The close code a socket ended with when there was no close frame (RFC 6455 §7.1.5).
pub(crate) const NO_CLOSE_FRAME: u16 = 1006;
/// The close code of a close frame without a code.
pub(crate) const NO_STATUS: u16 = 1005;

/// One socket.
#[derive(Debug, Default)]
pub(crate) struct SocketCell {
    state: AtomicU8,
    /// The code of the close the server started (0: none).
    pub(crate) server_close: AtomicU16,
    /// When it opened, µs since the start (0: not yet).
    pub(crate) opened_us: AtomicU64,
    /// The source address the kernel or `--source-addrs` gave it.
    pub(crate) source_ip: AtomicU32,
    pub(crate) frames_in: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) frames_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    /// WebSocket pings answered (the server closes a socket silent for two pings).
    pub(crate) pings: AtomicU64,
}

impl SocketCell {
    pub(crate) fn state(&self) -> SocketState {
        SocketState::from_u8(self.state.load(Relaxed))
    }

    pub(crate) fn set_state(&self, s: SocketState) {
        self.state.store(s as u8, Relaxed);
    }
}

/// One membership.
#[derive(Debug, Default)]
pub(crate) struct MembershipCell {
    state: AtomicU8,
    /// When the `phx_join` went out and when its reply came (0: not yet), µs since the start.
    pub(crate) sent_us: AtomicU64,
    pub(crate) replied_us: AtomicU64,
    /// The client's view: its digest and size, and when it last changed.
    pub(crate) digest: AtomicU64,
    pub(crate) size: AtomicU32,
    pub(crate) changed_us: AtomicU64,
    /// Payload bytes of this topic's `presence_state` and `presence_diff` frames.
    pub(crate) state_bytes: AtomicU64,
    pub(crate) diff_bytes: AtomicU64,
    pub(crate) duplicate_joins: AtomicU32,
    pub(crate) unknown_leaves: AtomicU32,
}

impl MembershipCell {
    pub(crate) fn state(&self) -> Membership {
        Membership::from_u8(self.state.load(Relaxed))
    }
}

/// Everything the clients publish: see the module docs.
#[derive(Debug)]
pub(crate) struct Board {
    start: Instant,
    pub(crate) sockets: Vec<SocketCell>,
    pub(crate) memberships: Vec<MembershipCell>,
    /// Bumped whenever a membership changes state, so a settled check can tell that nothing
    /// moved while it looked.
    pub(crate) generation: AtomicU64,
    /// Connect errors, refusals by reason, channel events (`phx_close`, `slot_revoked:R`,
    /// `phx_error`), frames not understood: name → count.
    tallies: Mutex<BTreeMap<String, u64>>,
}

impl Board {
    pub(crate) fn new(sockets: usize, memberships: usize) -> Board {
        Board {
            start: Instant::now(),
            sockets: (0..sockets).map(|_| SocketCell::default()).collect(),
            memberships: (0..memberships).map(|_| MembershipCell::default()).collect(),
            generation: AtomicU64::new(0),
            tallies: Mutex::new(BTreeMap::new()),
        }
    }

    /// Microseconds since the run started (at least 1, so 0 can mean "not yet").
    pub(crate) fn now_us(&self) -> u64 {
        (self.start.elapsed().as_micros() as u64).max(1)
    }

    pub(crate) fn set_membership(&self, m: usize, s: Membership) {
        self.memberships[m].state.store(s as u8, Relaxed);
        self.generation.fetch_add(1, Relaxed);
    }

    /// Move membership `m` to `to` only if it is in `from` (a leave must not revive a
    /// membership the server ended meanwhile).
    pub(crate) fn move_membership(&self, m: usize, from: &[Membership], to: Membership) {
        let cell = &self.memberships[m].state;
        let mut current = cell.load(Relaxed);
        while from.contains(&Membership::from_u8(current)) {
            match cell.compare_exchange(current, to as u8, Relaxed, Relaxed) {
                Ok(_) => {
                    self.generation.fetch_add(1, Relaxed);
                    return;
                }
                Err(now) => current = now,
            }
        }
    }

    pub(crate) fn tally(&self, what: impl Into<String>) {
        *self.tallies.lock().unwrap_or_else(|e| e.into_inner()).entry(what.into()).or_insert(0) += 1;
    }

    pub(crate) fn tallies(&self) -> BTreeMap<String, u64> {
        self.tallies.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_membership_moves_only_from_the_states_given() {
        let board = Board::new(1, 1);
        board.set_membership(0, Membership::Joined);
        board.move_membership(0, &[Membership::Joined], Membership::Left);
        assert_eq!(board.memberships[0].state(), Membership::Left);
        board.set_membership(0, Membership::Ended);
        board.move_membership(0, &[Membership::Joined, Membership::Joining], Membership::Left);
        assert_eq!(board.memberships[0].state(), Membership::Ended);
        assert_eq!(board.generation.load(Relaxed), 3);
    }

    #[test]
    fn states_round_trip_through_their_bytes() {
        for s in [SocketState::Connecting, SocketState::Open, SocketState::Failed, SocketState::Closed] {
            assert_eq!(SocketState::from_u8(s as u8), s);
        }
        for m in [
            Membership::Idle,
            Membership::Joining,
            Membership::Joined,
            Membership::Refused,
            Membership::Ended,
            Membership::Left,
        ] {
            assert_eq!(Membership::from_u8(m as u8), m);
        }
    }
}
