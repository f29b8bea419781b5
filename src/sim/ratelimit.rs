//! The account-wide request budget of crm-apis.md B3: a rolling ten-second window for
//! ordinary endpoints, a per-second window for search, and a daily counter shared by both.
//!
//! Only admitted requests consume budget; a refused request does not push the window out,
//! so a client that backs off gets through once the oldest request ages out.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::RateLimit;

const BURST_WINDOW: Duration = Duration::from_secs(10);
const SEARCH_WINDOW: Duration = Duration::from_secs(1);
/// Advertised in `X-HubSpot-RateLimit-Interval-Milliseconds`.
pub(crate) const BURST_INTERVAL_MS: u32 = 10_000;

/// Which HubSpot limit refused a request; names the `policyName` of the 429 body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    TenSecondlyRolling,
    Secondly,
    Daily,
}

impl Policy {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Policy::TenSecondlyRolling => "TEN_SECONDLY_ROLLING",
            Policy::Secondly => "SECONDLY",
            Policy::Daily => "DAILY",
        }
    }

    pub(crate) fn message(self) -> &'static str {
        match self {
            Policy::TenSecondlyRolling => "You have reached your ten_secondly_rolling limit.",
            Policy::Secondly => "You have reached your secondly limit.",
            Policy::Daily => "You have reached your daily limit.",
        }
    }
}

/// What the `X-HubSpot-RateLimit-*` headers report after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Budget {
    pub(crate) max: u32,
    pub(crate) remaining: u32,
    pub(crate) daily: u32,
    pub(crate) daily_remaining: u32,
}

/// The outcome for one request. `budget` is `None` for search, which carries no rate headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allowed {
        budget: Option<Budget>,
    },
    Limited {
        policy: Policy,
        budget: Option<Budget>,
        retry_after: bool,
    },
}

/// Sliding-window limiter; callers pass the clock so tests need not sleep.
#[derive(Debug)]
pub(crate) struct Limiter {
    config: RateLimit,
    burst: VecDeque<Instant>,
    search: VecDeque<Instant>,
    day: i64,
    daily_used: u32,
    ten_secondly_refusals: u64,
}

impl Limiter {
    pub(crate) fn new(config: RateLimit) -> Self {
        Limiter {
            config,
            burst: VecDeque::new(),
            search: VecDeque::new(),
            day: i64::MIN,
            daily_used: 0,
            ten_secondly_refusals: 0,
        }
    }

    /// Changes the daily limit; what was used today still counts.
    pub(crate) fn set_daily(&mut self, daily: u32) {
        self.config.daily = daily;
    }

    /// Admits or refuses one request at `now`; `day` is the UTC day number, whose change
    /// resets the daily counter as HubSpot does at the account's midnight.
    pub(crate) fn check(&mut self, now: Instant, day: i64, search: bool) -> Verdict {
        if day != self.day {
            self.day = day;
            self.daily_used = 0;
        }
        prune(&mut self.burst, now, BURST_WINDOW);
        prune(&mut self.search, now, SEARCH_WINDOW);

        if self.daily_used >= self.config.daily {
            // A daily refusal must not invite a quick retry: no Retry-After.
            return Verdict::Limited {
                policy: Policy::Daily,
                budget: (!search).then(|| self.budget()),
                retry_after: false,
            };
        }
        if search {
            if self.search.len() >= self.config.search_per_second as usize {
                // Search 429s come without Retry-After (crm-apis.md B2).
                return Verdict::Limited {
                    policy: Policy::Secondly,
                    budget: None,
                    retry_after: false,
                };
            }
            self.search.push_back(now);
            self.daily_used += 1;
            return Verdict::Allowed { budget: None };
        }
        if self.burst.len() >= self.config.per_ten_seconds as usize {
            self.ten_secondly_refusals += 1;
            // Retry-After is not guaranteed; alternating makes clients handle both cases.
            let retry_after = self.ten_secondly_refusals % 2 == 1;
            return Verdict::Limited {
                policy: Policy::TenSecondlyRolling,
                budget: Some(self.budget()),
                retry_after,
            };
        }
        self.burst.push_back(now);
        self.daily_used += 1;
        Verdict::Allowed {
            budget: Some(self.budget()),
        }
    }

    fn budget(&self) -> Budget {
        let used = u32::try_from(self.burst.len()).unwrap_or(u32::MAX);
        Budget {
            max: self.config.per_ten_seconds,
            remaining: self.config.per_ten_seconds.saturating_sub(used),
            daily: self.config.daily,
            daily_remaining: self.config.daily.saturating_sub(self.daily_used),
        }
    }
}

fn prune(window: &mut VecDeque<Instant>, now: Instant, width: Duration) {
    while window
        .front()
        .is_some_and(|&at| now.saturating_duration_since(at) >= width)
    {
        window.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_ten_seconds: u32, search_per_second: u32, daily: u32) -> Limiter {
        Limiter::new(RateLimit {
            per_ten_seconds,
            search_per_second,
            daily,
        })
    }

    #[test]
    fn burst_window_rolls_and_reports_remaining() {
        let mut limiter = limiter(2, 5, 1_000);
        let start = Instant::now();
        let first = limiter.check(start, 0, false);
        assert_eq!(
            first,
            Verdict::Allowed {
                budget: Some(Budget {
                    max: 2,
                    remaining: 1,
                    daily: 1_000,
                    daily_remaining: 999
                })
            }
        );
        assert!(matches!(
            limiter.check(start, 0, false),
            Verdict::Allowed { .. }
        ));
        let refused = limiter.check(start + Duration::from_secs(9), 0, false);
        assert!(matches!(
            refused,
            Verdict::Limited {
                policy: Policy::TenSecondlyRolling,
                retry_after: true,
                ..
            }
        ));
        let refused_again = limiter.check(start + Duration::from_secs(9), 0, false);
        assert!(matches!(
            refused_again,
            Verdict::Limited {
                retry_after: false,
                ..
            }
        ));
        assert!(matches!(
            limiter.check(start + Duration::from_secs(10), 0, false),
            Verdict::Allowed { .. }
        ));
    }

    #[test]
    fn search_has_its_own_per_second_window_without_headers() {
        let mut limiter = limiter(100, 2, 1_000);
        let start = Instant::now();
        assert_eq!(
            limiter.check(start, 0, true),
            Verdict::Allowed { budget: None }
        );
        assert_eq!(
            limiter.check(start, 0, true),
            Verdict::Allowed { budget: None }
        );
        assert_eq!(
            limiter.check(start, 0, true),
            Verdict::Limited {
                policy: Policy::Secondly,
                budget: None,
                retry_after: false
            }
        );
        assert!(matches!(
            limiter.check(start, 0, false),
            Verdict::Allowed { .. }
        ));
        assert!(matches!(
            limiter.check(start + Duration::from_secs(1), 0, true),
            Verdict::Allowed { .. }
        ));
    }

    #[test]
    fn daily_budget_resets_with_the_day() {
        let mut limiter = limiter(100, 100, 2);
        let start = Instant::now();
        assert!(matches!(
            limiter.check(start, 0, false),
            Verdict::Allowed { .. }
        ));
        assert!(matches!(
            limiter.check(start, 0, true),
            Verdict::Allowed { .. }
        ));
        assert!(matches!(
            limiter.check(start, 0, false),
            Verdict::Limited {
                policy: Policy::Daily,
                retry_after: false,
                ..
            }
        ));
        assert!(matches!(
            limiter.check(start, 1, false),
            Verdict::Allowed { .. }
        ));
    }
}
