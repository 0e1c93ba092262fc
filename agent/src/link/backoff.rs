//! Reconnect delays: exponential, capped, with jitter so a fleet that lost its controller
//! does not reconnect in lockstep when it comes back.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            current: initial,
        }
    }

    /// The next delay: half the current step plus a random part of the other half ("equal
    /// jitter"), so it never drops to zero. `unit` is a random number in [0, 1).
    pub fn next(&mut self, unit: f64) -> Duration {
        let step = self.current;
        self.current = (self.current * 2).min(self.max);
        step / 2 + step.mul_f64(unit.clamp(0.0, 1.0) / 2.0)
    }

    /// After a session that worked, start again from the initial delay.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_jitter_inside_each_step() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        assert_eq!(b.next(0.0), Duration::from_millis(50));
        assert_eq!(b.next(0.999_999).as_millis(), 199);
        assert_eq!(b.next(0.5), Duration::from_millis(300));
        assert_eq!(b.next(0.0), Duration::from_millis(200), "capped at 400");
        b.reset();
        assert_eq!(b.next(1.0), Duration::from_millis(100));
    }
}
