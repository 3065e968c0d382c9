//! Core-local coordination between tasks of one executor: a wake-everyone signal ([`Notify`]) and
//! strict first-come turns ([`Turns`]). Neither is `Send`; neither names the runtime, so any layer
//! (the mesh in `io`, the partition log, the group coordinator) can use them.

mod notify;
mod turns;

pub use notify::{Notify, Wait};
pub use turns::{Ticket, Turns};
