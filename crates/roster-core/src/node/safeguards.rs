//! The ablation switches of [`NodeState`](crate::NodeState): public only with the `ablation`
//! feature.

use serde::{Deserialize, Serialize};

/// Switches that turn one safeguard of DESIGN.md off, so the simulation can show the failure
/// it prevents. Every field is `true` in production ([`Safeguards::default`]), and only the
/// `ablation` feature (enabled by `roster-sim` alone) makes them reachable from outside.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Safeguards {
    /// User actors: an activation lives only while its node holds the lease on the user's
    /// partition (it stops when the lease is lost, handed over or released).
    pub activations_follow_lease: bool,
    /// User actors: an activation whose lease ran out is fenced at the lease's deadline, not
    /// when the node next notices (a paused or starved node notices late).
    pub fence_activations_at_deadline: bool,
    /// User actors: a new home starts a user with the state handed over to it only if no
    /// lease on the partition came between the one it was handed over under and its own (as
    /// its majority of grantors report, and its own earlier leases): otherwise another
    /// activation may have run in between, and the state is stale. Off, any handed-over
    /// state older than the new token is used.
    pub handover_state_needs_succession: bool,
    /// Rule 1: a lease starts only once a majority of the nodes granted it. Off, one grant
    /// (its own, say) is enough.
    pub lease_needs_majority: bool,
    /// Rule 8: the records of a gateway the home stops hearing stay in doubt until
    /// `isolation_ms × (1 + max_drift)` after its last heartbeat. Off, they are freed at once.
    pub keep_in_doubt: bool,
    /// Rule 3: at boot, epochs start above both the persisted epoch and the wall clock. Off,
    /// a node boots knowing no epoch at all.
    pub epochs_start_above_floor: bool,
    /// Rules 4 and 5: a gateway slot's horizon counts from the send time of the gateway's own
    /// heartbeat that the home echoed. Off, it counts from when the gateway heard the echo
    /// (or the grant), later by a heartbeat interval and the network's delays.
    pub horizon_from_send_time: bool,
    /// Rule 2: no lease grants for `lease_ms × (1 + max_drift)` after a start.
    pub quiet_after_restart: bool,
    /// Rule 6: a takeover grants only once the old gateway confirms.
    pub revoke_before_grant: bool,
    /// Rule 7: a resume keeps the replaced record until its close is confirmed.
    pub keep_replaced: bool,
    /// Rule 9: after a scan, no new tab until non-answering gateways' slots surely expired,
    /// counted from the later of lease start and their last heartbeat.
    pub scan_wait_from_last_heartbeat: bool,
    /// Rule 9: a scan that finds one `tab_id` twice closes all but the highest token.
    pub scan_dedup_tabs: bool,
    /// Rule 10: ignore grants and scans below an epoch whose scan this gateway answered.
    pub fence_stale_epochs: bool,
    /// Rule 10: answer no scan until `isolation_ms` after start.
    pub scan_quiet_after_start: bool,
    /// Rule 15: in its first `isolation_ms` a gateway answers scans *partly*: it re-attaches
    /// and lists this incarnation's slots, and the home adopts them but still counts the
    /// gateway as not answered. Off, it ignores scans then, and a slot granted in that window
    /// by a home that then loses the partition runs out at its horizon (`node_isolated`)
    /// although nothing failed.
    pub answer_scans_partly_at_start: bool,
    /// Rule 14: a gateway refuses a grant at or below the highest token its socket gave up
    /// in that scope (left, given back, revoke or close confirmed, horizon passed). Off, only
    /// confirmed revokes and closes fence, as before seed 2436.
    pub fence_released_tokens: bool,
    /// Rule 7, for every grant: granting a tab closes its other held connections (kept as
    /// replaced), even when the tab is also being revoked and so was not resumed. Off, such
    /// a grant left them held.
    pub close_tab_elsewhere_on_grant: bool,
    /// Rule 8: a home drops the waiting joins of a gateway it stops hearing (the gateway asks
    /// again if it lives). Off, a dead gateway's join could be granted later, making a record
    /// nobody confirms and nothing puts in doubt.
    pub drop_joins_of_unheard_gateways: bool,
    /// Presence: a snapshot ask is repeated as soon as the peer has echoed a heartbeat sent
    /// after it while the gap persists (its answer was lost). Off, only once per
    /// `heartbeat_timeout_ms`.
    pub ask_again_after_echo: bool,
    /// Rule 9: a scan closes a tab's older connections as soon as the answers in show it on
    /// two connections, not only once the scan is over.
    pub scan_dedup_at_once: bool,
    /// Rule 9: such an early close is sent again every heartbeat while the scan runs and the
    /// gateway is heard, as a replaced record's close is once the scan is over. Off, it was
    /// sent once: lost, the older connection stayed renewed by this home's echoes until the
    /// scan ended, up to `isolation_ms` later.
    pub retry_early_closes: bool,
    /// Rule 16: a node that shuts down gracefully says `Goodbye` to every peer after releasing
    /// everything. Off, its peers find out as after a crash (slower, never unsafe).
    pub say_goodbye: bool,
    /// Rule 16: a `Goodbye` frees the records of the incarnation that sent it, and marks the
    /// peer down only if that incarnation is the one heard now. Off, it acts on the peer by
    /// name: a late goodbye of an earlier life frees the records of the life that followed.
    pub goodbye_for_one_incarnation: bool,
    /// Rule 16: a new home skips a departed gateway in its scan only as the direct successor
    /// of the lease that gateway released (epoch one above: no other home of the partition
    /// can have granted the node's next life a slot in between), and only if the departed
    /// life had been up `isolation_ms` (no earlier life still holds a slot). Off, any departed
    /// gateway is skipped.
    pub goodbye_scan_needs_direct_successor: bool,
    /// Validate: the home answers from its current slot records. Off, it answers from every
    /// token it granted in the scope while it serves the partition: a stale `true` for a
    /// token revoked or taken over since.
    pub validate_reads_current_slots: bool,
}

impl Default for Safeguards {
    fn default() -> Self {
        Self {
            activations_follow_lease: true,
            fence_activations_at_deadline: true,
            handover_state_needs_succession: true,
            lease_needs_majority: true,
            keep_in_doubt: true,
            epochs_start_above_floor: true,
            horizon_from_send_time: true,
            quiet_after_restart: true,
            revoke_before_grant: true,
            keep_replaced: true,
            scan_wait_from_last_heartbeat: true,
            scan_dedup_tabs: true,
            fence_stale_epochs: true,
            scan_quiet_after_start: true,
            answer_scans_partly_at_start: true,
            fence_released_tokens: true,
            close_tab_elsewhere_on_grant: true,
            drop_joins_of_unheard_gateways: true,
            ask_again_after_echo: true,
            scan_dedup_at_once: true,
            retry_early_closes: true,
            say_goodbye: true,
            goodbye_for_one_incarnation: true,
            goodbye_scan_needs_direct_successor: true,
            validate_reads_current_slots: true,
        }
    }
}
