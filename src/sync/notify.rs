//! A core-local "something changed" signal: tasks wait, the owner wakes them all.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Wakes every waiter on [`Notify::notify_all`]. Core-local (`!Send`).
#[derive(Default)]
pub struct Notify {
    generation: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl Notify {
    pub fn notify_all(&self) {
        self.generation.set(self.generation.get() + 1);
        for w in self.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Completes at the next `notify_all` after this call.
    pub fn wait(&self) -> Wait<'_> {
        Wait { notify: self, start: self.generation.get() }
    }
}

pub struct Wait<'a> {
    notify: &'a Notify,
    start: u64,
}

impl Future for Wait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.generation.get() != self.start {
            return Poll::Ready(());
        }
        let mut w = self.notify.wakers.borrow_mut();
        if !w.iter().any(|x| x.will_wake(cx.waker())) {
            w.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
