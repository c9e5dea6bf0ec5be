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
    /// When this client sent its close (or dropped the connection, or sent its leaves), µs
    /// since the start (0: not yet). The settle after the close stage starts only once every
    /// closing socket has one.
    pub(crate) close_sent_us: AtomicU64,
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
        Board::starting_at(Instant::now(), sockets, memberships)
    }

    /// A board whose clock started at `start` (a worker's board shares the coordinator's).
    pub(crate) fn starting_at(start: Instant, sockets: usize, memberships: usize) -> Board {
        Board {
            start,
            sockets: (0..sockets).map(|_| SocketCell::default()).collect(),
            memberships: (0..memberships).map(|_| MembershipCell::default()).collect(),
            generation: AtomicU64::new(0),
            tallies: Mutex::new(BTreeMap::new()),
        }
    }

    /// When the run started.
    pub(crate) fn start(&self) -> Instant {
        self.start
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

    /// Add `n` to tally `what` (what a worker counted).
    pub(crate) fn add_tally(&self, what: String, n: u64) {
        *self.tallies.lock().unwrap_or_else(|e| e.into_inner()).entry(what).or_insert(0) += n;
    }

    /// Socket `i`'s cell as a value (a worker sends it to the coordinator).
    pub(crate) fn socket_record(&self, i: usize) -> SocketRecord {
        let c = &self.sockets[i];
        SocketRecord {
            state: c.state.load(Relaxed),
            server_close: c.server_close.load(Relaxed),
            opened_us: c.opened_us.load(Relaxed),
            source_ip: c.source_ip.load(Relaxed),
            frames_in: c.frames_in.load(Relaxed),
            bytes_in: c.bytes_in.load(Relaxed),
            frames_out: c.frames_out.load(Relaxed),
            bytes_out: c.bytes_out.load(Relaxed),
            pings: c.pings.load(Relaxed),
            close_sent_us: c.close_sent_us.load(Relaxed),
        }
    }

    /// Store a worker's record of socket `i`.
    pub(crate) fn store_socket(&self, i: usize, r: &SocketRecord) {
        let c = &self.sockets[i];
        c.server_close.store(r.server_close, Relaxed);
        c.opened_us.store(r.opened_us, Relaxed);
        c.source_ip.store(r.source_ip, Relaxed);
        c.frames_in.store(r.frames_in, Relaxed);
        c.bytes_in.store(r.bytes_in, Relaxed);
        c.frames_out.store(r.frames_out, Relaxed);
        c.bytes_out.store(r.bytes_out, Relaxed);
        c.pings.store(r.pings, Relaxed);
        c.close_sent_us.store(r.close_sent_us, Relaxed);
        c.state.store(r.state, Relaxed);
    }

    /// Membership `m`'s cell as a value.
    pub(crate) fn membership_record(&self, m: usize) -> MembershipRecord {
        let c = &self.memberships[m];
        MembershipRecord {
            state: c.state.load(Relaxed),
            sent_us: c.sent_us.load(Relaxed),
            replied_us: c.replied_us.load(Relaxed),
            digest: c.digest.load(Relaxed),
            size: c.size.load(Relaxed),
            changed_us: c.changed_us.load(Relaxed),
            state_bytes: c.state_bytes.load(Relaxed),
            diff_bytes: c.diff_bytes.load(Relaxed),
            duplicate_joins: c.duplicate_joins.load(Relaxed),
            unknown_leaves: c.unknown_leaves.load(Relaxed),
        }
    }

    /// Store a worker's record of membership `m`; a change of state bumps the generation.
    pub(crate) fn store_membership(&self, m: usize, r: &MembershipRecord) {
        let c = &self.memberships[m];
        c.sent_us.store(r.sent_us, Relaxed);
        c.replied_us.store(r.replied_us, Relaxed);
        c.size.store(r.size, Relaxed);
        c.changed_us.store(r.changed_us, Relaxed);
        c.state_bytes.store(r.state_bytes, Relaxed);
        c.diff_bytes.store(r.diff_bytes, Relaxed);
        c.duplicate_joins.store(r.duplicate_joins, Relaxed);
        c.unknown_leaves.store(r.unknown_leaves, Relaxed);
        c.digest.store(r.digest, Relaxed);
        if c.state.swap(r.state, Relaxed) != r.state {
            self.generation.fetch_add(1, Relaxed);
        }
    }
}

/// A [`SocketCell`] as a value, as a worker process sends it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct SocketRecord {
    state: u8,
    server_close: u16,
    opened_us: u64,
    source_ip: u32,
    frames_in: u64,
    bytes_in: u64,
    frames_out: u64,
    bytes_out: u64,
    pings: u64,
    close_sent_us: u64,
}

/// A [`MembershipCell`] as a value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct MembershipRecord {
    state: u8,
    sent_us: u64,
    replied_us: u64,
    digest: u64,
    size: u32,
    changed_us: u64,
    state_bytes: u64,
    diff_bytes: u64,
    duplicate_joins: u32,
    unknown_leaves: u32,
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
    fn a_record_stored_on_another_board_reproduces_the_cell_and_a_state_change_bumps_the_generation() {
        let (worker, coordinator) = (Board::new(2, 2), Board::new(2, 2));
        worker.sockets[1].set_state(SocketState::Open);
        worker.sockets[1].bytes_in.store(77, Relaxed);
        worker.set_membership(1, Membership::Joined);
        worker.memberships[1].digest.store(0xfeed, Relaxed);
        coordinator.store_socket(1, &worker.socket_record(1));
        coordinator.store_membership(1, &worker.membership_record(1));
        assert_eq!(coordinator.socket_record(1), worker.socket_record(1));
        assert_eq!(coordinator.membership_record(1), worker.membership_record(1));
        assert_eq!(
            (coordinator.sockets[1].state(), coordinator.memberships[1].state()),
            (SocketState::Open, Membership::Joined)
        );
        assert_eq!(coordinator.generation.load(Relaxed), 1);
        coordinator.store_membership(1, &worker.membership_record(1));
        assert_eq!(coordinator.generation.load(Relaxed), 1, "the same state again is no change");
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
