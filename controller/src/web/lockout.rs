//! Failed logins, limited: a client address that presents wrong operator tokens too often (on
//! the login form or as an API bearer token) is locked out for a while, and while wrong
//! tokens arrive from many addresses at once, each of those addresses is locked out at its
//! first failure.
//!
//! Pure: the caller passes the clock, so the tests step through a lockout without waiting.
//! The table of addresses is bounded; when it is full the stalest entry goes.
//!
//! A locked-out address is refused before its token is even looked at, a right token
//! included: otherwise the lockout would still tell a guesser when a guess was right.
//! Successful logins do not clear the count, so one operator's valid token cannot be used to
//! keep guessing at another's.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

/// The limits; [`LoginLimits::default`] is what the controller runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// Failures one address may have within `window`; the last of them locks it out.
    pub per_address: u32,
    /// Failures all addresses together may have within `window` before every address that
    /// fails is locked out at its first failure (many addresses guessing at once).
    pub global: u32,
    /// The span failures are counted over.
    pub window: Duration,
    /// How long a locked-out address is refused.
    pub lockout: Duration,
    /// Addresses tracked at most (each one that failed recently).
    pub max_addresses: usize,
}

impl Default for LoginLimits {
    /// Five wrong tokens a minute from one address, a hundred from all of them; five minutes
    /// out; ten thousand addresses remembered (a few hundred kilobytes).
    fn default() -> Self {
        LoginLimits {
            per_address: 5,
            global: 100,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(300),
            max_addresses: 10_000,
        }
    }
}

/// Why an address was locked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// It failed `per_address` times within the window.
    Address,
    /// It failed while failures from every address together were over `global`.
    Flood,
}

impl Scope {
    /// The name in logs and the audit.
    pub fn id(self) -> &'static str {
        match self {
            Scope::Address => "address",
            Scope::Flood => "flood",
        }
    }
}

/// What a failure brought about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Failed {
    /// The address is now locked out, and why (None: it may try again).
    pub locked: Option<Lockout>,
    /// This failure was the one that took every address together over `global`: log that
    /// once per window, not once per address.
    pub flood_began: bool,
}

/// A lockout just imposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lockout {
    /// Why.
    pub scope: Scope,
    /// The address's failures in the current window.
    pub failures: u32,
    /// How long it lasts.
    pub lasts: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: Instant,
    failures: u32,
    locked_until: Option<Instant>,
}

impl Entry {
    /// Whether the entry still matters at `now`: a running lockout or a window with failures.
    fn live(&self, now: Instant, window: Duration) -> bool {
        self.locked_until.is_some_and(|t| t > now) || now < self.window_start + window
    }

    /// When it stops mattering, for eviction.
    fn last_relevant(&self, window: Duration) -> Instant {
        let window_end = self.window_start + window;
        self.locked_until.map_or(window_end, |t| t.max(window_end))
    }
}

/// The failed-login table.
#[derive(Debug)]
pub struct Limiter {
    limits: LoginLimits,
    addresses: HashMap<IpAddr, Entry>,
    global_start: Option<Instant>,
    global_failures: u32,
}

impl Limiter {
    pub fn new(limits: LoginLimits) -> Limiter {
        Limiter {
            limits,
            addresses: HashMap::new(),
            global_start: None,
            global_failures: 0,
        }
    }

    /// Ok when `client` may present a token at `now`; Err with how long it must wait.
    pub fn check(&mut self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let key = key(client);
        let Some(entry) = self.addresses.get(&key) else {
            return Ok(());
        };
        match entry.locked_until {
            Some(until) if until > now => Err(until - now),
            Some(_) => {
                // Served its time: it starts again from nothing.
                self.addresses.remove(&key);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts a wrong token from `client` at `now`.
    pub fn failed(&mut self, client: IpAddr, now: Instant) -> Failed {
        let limits = self.limits;
        // Every address together, in fixed windows.
        if self
            .global_start
            .is_none_or(|start| now >= start + limits.window)
        {
            self.global_start = Some(now);
            self.global_failures = 0;
        }
        self.global_failures = self.global_failures.saturating_add(1);
        let flood = self.global_failures > limits.global;
        let flood_began = self.global_failures == limits.global.saturating_add(1);

        let key = key(client);
        if !self.addresses.contains_key(&key) {
            self.make_room(now);
        }
        let entry = self.addresses.entry(key).or_insert(Entry {
            window_start: now,
            failures: 0,
            locked_until: None,
        });
        if entry.locked_until.is_some_and(|t| t > now) {
            // Two requests that passed `check` together: the lockout already stands.
            entry.failures = entry.failures.saturating_add(1);
            return Failed {
                locked: None,
                flood_began,
            };
        }
        if entry.locked_until.is_some() || now >= entry.window_start + limits.window {
            *entry = Entry {
                window_start: now,
                failures: 0,
                locked_until: None,
            };
        }
        entry.failures = entry.failures.saturating_add(1);
        let scope = if entry.failures >= limits.per_address {
            Some(Scope::Address)
        } else if flood {
            Some(Scope::Flood)
        } else {
            None
        };
        let locked = scope.map(|scope| {
            entry.locked_until = Some(now + limits.lockout);
            Lockout {
                scope,
                failures: entry.failures,
                lasts: limits.lockout,
            }
        });
        Failed {
            locked,
            flood_began,
        }
    }

    /// The limits it applies.
    pub fn limits(&self) -> LoginLimits {
        self.limits
    }

    /// Addresses tracked now (for tests and the bound).
    pub fn tracked(&self) -> usize {
        self.addresses.len()
    }

    /// Frees a slot when the table is full: the entries that no longer matter, else the one
    /// that stops mattering first.
    fn make_room(&mut self, now: Instant) {
        if self.addresses.len() < self.limits.max_addresses {
            return;
        }
        let window = self.limits.window;
        self.addresses.retain(|_, e| e.live(now, window));
        if self.addresses.len() >= self.limits.max_addresses
            && let Some(stalest) = self
                .addresses
                .iter()
                .min_by_key(|(_, e)| e.last_relevant(window))
                .map(|(k, _)| *k)
        {
            self.addresses.remove(&stalest);
        }
    }
}

/// The key an address is counted under: IPv4 as it is (an IPv4-mapped IPv6 address too);
/// IPv6 by its /64, which one machine usually holds whole (counting single IPv6 addresses
/// would give one guesser 2^64 fresh starts).
fn key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn the_fifth_failure_locks_the_address_out_and_the_lockout_expires() {
        let mut limiter = Limiter::new(LoginLimits::default());
        let t0 = Instant::now();
        let guesser = ip("192.0.2.7");
        for i in 1..=4 {
            assert_eq!(limiter.check(guesser, t0), Ok(()), "attempt {i}");
            assert_eq!(limiter.failed(guesser, t0).locked, None, "failure {i}");
        }
        assert_eq!(limiter.check(guesser, t0), Ok(()));
        assert_eq!(
            limiter.failed(guesser, t0).locked,
            Some(Lockout {
                scope: Scope::Address,
                failures: 5,
                lasts: Duration::from_secs(300)
            })
        );
        // The sixth attempt is refused, with the time left; another address is not.
        assert_eq!(
            limiter.check(guesser, t0 + Duration::from_secs(100)),
            Err(Duration::from_secs(200))
        );
        assert_eq!(limiter.check(ip("192.0.2.8"), t0), Ok(()));
        // Still out one moment before the end, back in at the end, with a fresh count.
        let end = t0 + Duration::from_secs(300);
        assert!(
            limiter
                .check(guesser, end - Duration::from_millis(1))
                .is_err()
        );
        assert_eq!(limiter.check(guesser, end), Ok(()));
        assert_eq!(limiter.failed(guesser, end).locked, None);
        assert_eq!(limiter.check(guesser, end), Ok(()));
    }

    #[test]
    fn failures_spread_over_more_than_a_window_do_not_lock() {
        let mut limiter = Limiter::new(LoginLimits::default());
        let t0 = Instant::now();
        let typo = ip("192.0.2.9");
        for i in 0..4 {
            assert_eq!(
                limiter
                    .failed(typo, t0 + i * Duration::from_secs(10))
                    .locked,
                None
            );
        }
        // The window started at t0; the fifth failure comes after it ended.
        assert_eq!(limiter.failed(typo, t0 + MINUTE).locked, None);
        assert_eq!(limiter.check(typo, t0 + MINUTE), Ok(()));
    }

    #[test]
    fn many_addresses_failing_at_once_are_each_locked_out_at_their_first_failure() {
        let limits = LoginLimits {
            global: 10,
            ..LoginLimits::default()
        };
        let mut limiter = Limiter::new(limits);
        let t0 = Instant::now();
        let mut began = 0;
        for i in 0..10u8 {
            let failed = limiter.failed(IpAddr::from([198, 51, 100, i]), t0);
            assert_eq!(failed.locked, None, "below the global limit");
            began += usize::from(failed.flood_began);
        }
        let failed = limiter.failed(ip("203.0.113.1"), t0);
        assert!(failed.flood_began);
        assert_eq!(failed.locked.map(|l| l.scope), Some(Scope::Flood));
        assert!(limiter.check(ip("203.0.113.1"), t0).is_err());
        let failed = limiter.failed(ip("203.0.113.2"), t0);
        assert!(!failed.flood_began, "the flood is reported once");
        assert_eq!(failed.locked.map(|l| l.scope), Some(Scope::Flood));
        assert_eq!(began, 0);
        // An address that never failed is untouched by the flood.
        assert_eq!(limiter.check(ip("203.0.113.3"), t0), Ok(()));
        // The next window starts counting again.
        let later = t0 + MINUTE;
        assert_eq!(limiter.failed(ip("203.0.113.4"), later).locked, None);
    }

    #[test]
    fn the_table_is_bounded_and_drops_the_stalest_address() {
        let limits = LoginLimits {
            max_addresses: 3,
            global: u32::MAX,
            ..LoginLimits::default()
        };
        let mut limiter = Limiter::new(limits);
        let t0 = Instant::now();
        for i in 0..5u8 {
            for _ in 0..5 {
                limiter.failed(
                    IpAddr::from([192, 0, 2, i]),
                    t0 + Duration::from_secs(u64::from(i)),
                );
            }
            assert!(limiter.tracked() <= 3);
        }
        assert_eq!(limiter.tracked(), 3);
        // The first two were locked out first, so they were dropped first.
        let now = t0 + Duration::from_secs(5);
        assert_eq!(limiter.check(IpAddr::from([192, 0, 2, 0]), now), Ok(()));
        assert!(limiter.check(IpAddr::from([192, 0, 2, 4]), now).is_err());
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let mut limiter = Limiter::new(LoginLimits::default());
        let t0 = Instant::now();
        for i in 1..=5u16 {
            limiter.failed(
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, i)),
                t0,
            );
        }
        assert!(limiter.check(ip("2001:db8:1:2::ffff"), t0).is_err());
        assert_eq!(limiter.check(ip("2001:db8:1:3::1"), t0), Ok(()));
        for _ in 0..5 {
            limiter.failed(ip("::ffff:192.0.2.1"), t0);
        }
        assert!(limiter.check(ip("192.0.2.1"), t0).is_err());
    }
}
