//! A future polled only when its own waker has fired.
//!
//! `tokio::select!` polls every branch each time the task is polled. A TCP
//! connection waits for its next read beside futures that almost never
//! complete (the shutdown and eviction signals, the idle timer), and
//! polling those once per call cost more than the read itself (a lock in
//! `Notify`, a version check and a coop budget in `watch`, the timer's
//! state). [`Woken`] hands the inner future a waker of its own: the inner
//! future is polled on the first poll, then only after that waker fired,
//! or after [`Woken::poll_next_time`]. Any other poll is one atomic swap.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// `future`, polled only when something woke it (see the module doc).
pub(super) struct Woken<F> {
    future: F,
    signal: Arc<Signal>,
    /// `signal` as a waker, made once.
    waker: Waker,
    /// The task's waker `signal` passes wake-ups on to, as last seen.
    task: Option<Waker>,
}

/// Set by the inner future's waker; passes the wake-up on to the task.
struct Signal {
    fired: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(task) = task.as_ref() {
            task.wake_by_ref();
        }
    }
}

impl<F: Future + Unpin> Woken<F> {
    /// Wraps `future`; the first poll polls it.
    pub(super) fn new(future: F) -> Self {
        let signal = Arc::new(Signal {
            fired: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        let waker = Waker::from(Arc::clone(&signal));
        Woken {
            future,
            signal,
            waker,
            task: None,
        }
    }

    /// The inner future, to change (a timer to reset, say): call
    /// [`poll_next_time`](Self::poll_next_time) after a change that needs
    /// a poll to take effect.
    pub(super) fn get_mut(&mut self) -> &mut F {
        &mut self.future
    }

    /// Makes the next poll poll the inner future.
    pub(super) fn poll_next_time(&mut self) {
        self.signal.fired.store(true, Ordering::Relaxed);
    }
}

impl<F: Future + Unpin> Future for Woken<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        // A task's waker rarely changes: one comparison when it has not.
        if !this.task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
            let task = cx.waker().clone();
            *this.signal.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.clone());
            this.task = Some(task);
        }
        // Cleared before the poll: a wake-up during it polls again.
        if !this.signal.fired.swap(false, Ordering::Acquire) {
            return Poll::Pending;
        }
        Pin::new(&mut this.future).poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::Woken;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Wake, Waker};

    /// Counts its polls; ready once `ready` is set, after a wake.
    struct Probe {
        polls: Arc<AtomicUsize>,
        ready: Arc<std::sync::Mutex<(bool, Option<Waker>)>>,
    }

    impl Future for Probe {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            let mut state = self.ready.lock().unwrap();
            if state.0 {
                return Poll::Ready(());
            }
            state.1 = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The shared state of one probe: its poll count, and (ready, waker).
    type Ready = Arc<std::sync::Mutex<(bool, Option<Waker>)>>;

    /// A wrapped probe, with its poll count and readiness to look at.
    fn probe() -> (Woken<Probe>, Arc<AtomicUsize>, Ready) {
        let polls = Arc::new(AtomicUsize::new(0));
        let ready: Ready = Arc::new(std::sync::Mutex::new((false, None)));
        let woken = Woken::new(Probe {
            polls: Arc::clone(&polls),
            ready: Arc::clone(&ready),
        });
        (woken, polls, ready)
    }

    #[test]
    fn polls_the_inner_future_only_after_its_waker_fired() {
        let (mut woken, polls, ready) = probe();
        let task = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&task));
        let mut cx = Context::from_waker(&waker);
        // The first poll polls it; the next ones do not.
        for _ in 0..5 {
            assert!(Pin::new(&mut woken).poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        // A forced poll polls it once more.
        woken.poll_next_time();
        assert!(Pin::new(&mut woken).poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), 2);
        // Its waker wakes the task, and the next poll sees it ready.
        let inner = ready.lock().unwrap().1.take().unwrap();
        ready.lock().unwrap().0 = true;
        inner.wake();
        assert_eq!(task.0.load(Ordering::Relaxed), 1);
        assert!(Pin::new(&mut woken).poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_new_task_waker_gets_the_wake_ups() {
        let (mut woken, _, ready) = probe();
        let first = Arc::new(Count(AtomicUsize::new(0)));
        let second = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&first));
        assert!(
            Pin::new(&mut woken)
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        let waker = Waker::from(Arc::clone(&second));
        assert!(
            Pin::new(&mut woken)
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        let inner = ready.lock().unwrap().1.take().unwrap();
        inner.wake();
        assert_eq!(first.0.load(Ordering::Relaxed), 0);
        assert_eq!(second.0.load(Ordering::Relaxed), 1);
    }
}
