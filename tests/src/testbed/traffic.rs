//! Users' traffic to a host: `GET path` from outside every 25 ms (the "real traffic"),
//! each answer kept with the time it came, so a test can say which requests failed and when
//! the site answered again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::http;

/// How often a request starts.
pub const EVERY: Duration = Duration::from_millis(25);

/// One answer: when it came and its status (0: no HTTP answer at all, e.g. refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub at: SystemTime,
    pub status: u16,
}

impl Answer {
    pub fn ok(&self) -> bool {
        self.status == 200
    }
}

/// Requests to one address while alive. At 40 a second a ten-minute test keeps 24,000
/// answers: kept whole, so the figures can count every failed request.
#[derive(Debug)]
pub struct Traffic {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answer>>>,
    thread: Option<JoinHandle<()>>,
}

impl Traffic {
    /// `GET path` from `addr` every [`EVERY`] (or as fast as answers come, when slower).
    pub fn start(addr: SocketAddr, path: &'static str) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let (flag, out) = (Arc::clone(&stop), Arc::clone(&answers));
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let next = Instant::now() + EVERY;
                let status = http::get(addr, path).map_or(0, |r| r.status);
                out.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Answer {
                        at: SystemTime::now(),
                        status,
                    });
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        });
        Traffic {
            stop,
            answers,
            thread: Some(thread),
        }
    }

    /// Every answer so far, oldest first.
    pub fn answers(&self) -> Vec<Answer> {
        self.answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The answers that came at or after `t`.
    pub fn since(&self, t: SystemTime) -> Vec<Answer> {
        self.answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|a| a.at >= t)
            .copied()
            .collect()
    }

    /// Requests that failed (anything but 200) at or after `t`.
    pub fn failed_since(&self, t: SystemTime) -> usize {
        self.since(t).iter().filter(|a| !a.ok()).count()
    }

    /// The latest answer, if any came.
    pub fn latest(&self) -> Option<Answer> {
        self.answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last()
            .copied()
    }

    /// Waits until an answer after `t` is a 200; returns it, or `None` at the deadline.
    pub fn wait_ok_after(&self, t: SystemTime, timeout: Duration) -> Option<Answer> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(a) = self.since(t).into_iter().find(Answer::ok) {
                return Some(a);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops sending; returns every answer.
    pub fn stop(mut self) -> Vec<Answer> {
        self.halt();
        self.answers()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.halt();
    }
}
