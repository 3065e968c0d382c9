//! Consumer-group coordination (issue #3), as pure state machines: functions from (state, event,
//! time) to (state, actions), with no I/O, no clocks and no runtime, so every transition is tested
//! deterministically without sockets.
//!
//! Status: the classic group protocol's membership state machine ([`group`]), driven by the shard
//! that coordinates each group (`server::groups`). Committed offsets are kept there, in memory.
//! The KIP-848 consumer protocol's group ([`consumer_group`]: ConsumerGroupHeartbeat with
//! server-side assignment) is written and tested but not yet wired to handlers.
//! Transactions: one transactional id's state at its coordinator ([`transaction`]), driven by
//! `server::transactions`.

pub mod consumer_group;
pub mod group;
pub mod offsets;
pub mod transaction;
