//! Consumer-group coordination (issue #3), as pure state machines: functions from (state, event,
//! time) to (state, actions), with no I/O, no clocks and no runtime, so every transition is tested
//! deterministically without sockets.
//!
//! Status: the classic group protocol's membership state machine ([`group`]). Not yet wired to the
//! network: ApiVersions does not advertise FindCoordinator, JoinGroup, SyncGroup, Heartbeat or
//! LeaveGroup, and committed offsets are not stored. The shard that owns a group (the core owning
//! its `__consumer_offsets` partition) will feed it events and carry out its actions.

pub mod group;
