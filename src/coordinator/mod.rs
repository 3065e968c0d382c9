//! Consumer-group coordination (issue #3), as pure state machines: functions from (state, event,
//! time) to (state, actions), with no I/O, no clocks and no runtime, so every transition is tested
//! deterministically without sockets.
//!
//! Status: the classic group protocol's membership state machine ([`group`]), driven by the shard
//! that coordinates each group (`server::groups`). Committed offsets are kept there, in memory.

pub mod group;
pub mod offsets;
