//! Strict first-come turns between tasks of one core.
//!
//! A task takes a [`Ticket`] synchronously, at the moment its place in line is decided (for a
//! request, before its first await, so tickets follow request order), then awaits
//! [`Ticket::turn`]. Turns are served in ticket order, one at a time; dropping a ticket, before or
//! after its turn came, passes the turn on, so a cancelled task never wedges the line. This is
//! what keeps pipelined work in arrival order across awaits whose wake-up order is not: a
//! partition admitting appends, the mesh sending to a full channel, a group applying commits
//! whose fdatasyncs finished together.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;

use super::Notify;

/// A line of tickets served in order. Core-local (`!Send`).
#[derive(Default)]
pub struct Turns {
    next: Cell<u64>,
    serving: Cell<u64>,
    /// Tickets dropped before their turn; skipped when `serving` reaches them.
    abandoned: RefCell<BTreeSet<u64>>,
    /// Woken whenever a turn ends.
    done: Notify,
}

/// A place in a [`Turns`] line. Dropping it passes the turn on.
pub struct Ticket<'a> {
    turns: &'a Turns,
    number: u64,
    admitted: bool,
}

impl Turns {
    /// Takes the next place in line. Synchronous: the caller's order of calls is the order of turns.
    pub fn ticket(&self) -> Ticket<'_> {
        let number = self.next.get();
        self.next.set(number + 1);
        Ticket { turns: self, number, admitted: false }
    }

    /// No ticket is out: every one taken has been dropped.
    pub fn idle(&self) -> bool {
        self.serving.get() == self.next.get()
    }
}

impl Ticket<'_> {
    /// Completes once every earlier ticket has been dropped; the turn is this ticket's until it
    /// is dropped.
    pub async fn turn(&mut self) {
        while self.turns.serving.get() != self.number {
            self.turns.done.wait().await;
        }
        self.admitted = true;
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let t = self.turns;
        let mut abandoned = t.abandoned.borrow_mut();
        if self.admitted {
            assert_eq!(t.serving.get(), self.number, "only the ticket being served ends a turn");
            t.serving.set(self.number + 1);
        } else {
            abandoned.insert(self.number);
        }
        while abandoned.remove(&t.serving.get()) {
            t.serving.set(t.serving.get() + 1);
        }
        drop(abandoned);
        t.done.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;

    /// Drives `fut` one poll at a time without a runtime (the turns only need wakers).
    fn poll_once<F: std::future::Future>(fut: std::pin::Pin<&mut F>) -> std::task::Poll<F::Output> {
        let waker = std::task::Waker::noop();
        fut.poll(&mut std::task::Context::from_waker(waker))
    }

    #[test]
    fn turns_come_in_ticket_order_whatever_order_they_are_awaited_in() {
        let turns = Turns::default();
        let mut a = turns.ticket();
        let mut b = turns.ticket();
        {
            let mut wait_b = std::pin::pin!(b.turn());
            assert!(poll_once(wait_b.as_mut()).is_pending(), "b waits for a");
        }
        {
            let mut wait_a = std::pin::pin!(a.turn());
            assert!(poll_once(wait_a.as_mut()).is_ready());
        }
        drop(a);
        let mut wait_b = std::pin::pin!(b.turn());
        assert!(poll_once(wait_b.as_mut()).is_ready());
    }

    #[test]
    fn a_ticket_dropped_before_its_turn_is_skipped() {
        let turns = Rc::new(Turns::default());
        let mut a = turns.ticket();
        let b = turns.ticket();
        let mut c = turns.ticket();
        drop(b);
        assert!(poll_once(std::pin::pin!(a.turn())).is_ready());
        assert!(poll_once(std::pin::pin!(c.turn())).is_pending());
        drop(a);
        assert!(poll_once(std::pin::pin!(c.turn())).is_ready());
        drop(c);
        assert!(turns.idle());
        // The line goes on after everyone left.
        let mut d = turns.ticket();
        assert!(poll_once(std::pin::pin!(d.turn())).is_ready());
    }
}
