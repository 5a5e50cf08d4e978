//! One rate budget for the EBS direct block requests of the whole process:
//! every migration, import and export of a fleet draws its GetSnapshotBlock
//! and PutSnapshotBlock starts from the same budget of its region (EBS
//! allows about 1,000 of each a second per snapshot, and by default about
//! as many per account), so N at once never exceed what one may send. The
//! budget is additive-increase, multiplicative-decrease: a throttled request
//! halves the rate (once a second at most: the requests already in flight
//! when EBS pushed back are one event), each request that goes through
//! gives a little back, up to the maximum (`--max-requests-per-second`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// The default maximum, per API and region: under EBS's default quota of
/// about 1,000 requests a second, with room for the List and Start calls.
pub const DEFAULT_MAX: f64 = 900.0;
/// The rate never drops below this (requests a second).
const MIN_RATE: f64 = 5.0;
/// What each request that goes through gives back (requests a second):
/// from half the maximum back to it in about 1,800 requests.
const STEP: f64 = 0.25;

/// Which EBS direct API a request is of: each has its own quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Api {
    GetSnapshotBlock,
    PutSnapshotBlock,
}

#[derive(Debug)]
struct State {
    max: f64,
    rate: f64,
    next: Instant,
    last_cut: Option<Instant>,
    granted: u64,
    throttled: u64,
}

/// A token schedule at a rate that halves on throttling and climbs back.
#[derive(Debug)]
pub struct RateBudget {
    state: Mutex<State>,
}

/// What a budget did, as the migration's JSON reports it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BudgetReport {
    pub max_per_second: f64,
    /// The rate it allows now.
    pub per_second: f64,
    pub requests: u64,
    pub throttled: u64,
}

impl RateBudget {
    pub fn new(max: f64) -> Self {
        let max = max.max(MIN_RATE);
        RateBudget {
            state: Mutex::new(State {
                max,
                rate: max,
                next: Instant::now(),
                last_cut: None,
                granted: 0,
                throttled: 0,
            }),
        }
    }

    /// Wait for this request's slot: the next free one at the current rate.
    pub async fn acquire(&self) {
        let at = {
            let mut s = self.state.lock().expect("budget lock");
            let now = Instant::now();
            let at = s.next.max(now);
            s.next = at + Duration::from_secs_f64(1.0 / s.rate);
            s.granted += 1;
            at
        };
        tokio::time::sleep_until(at).await;
    }

    /// EBS throttled a request: half the rate, once a second at most.
    pub fn throttled(&self) {
        let mut s = self.state.lock().expect("budget lock");
        s.throttled += 1;
        let now = Instant::now();
        if s.last_cut
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            s.rate = (s.rate / 2.0).max(MIN_RATE);
            s.last_cut = Some(now);
        }
    }

    /// A request went through: a little of the rate comes back.
    pub fn succeeded(&self) {
        let mut s = self.state.lock().expect("budget lock");
        s.rate = (s.rate + STEP).min(s.max);
    }

    pub fn report(&self) -> BudgetReport {
        let s = self.state.lock().expect("budget lock");
        BudgetReport {
            max_per_second: s.max,
            per_second: s.rate,
            requests: s.granted,
            throttled: s.throttled,
        }
    }
}

type Budgets = Mutex<(f64, HashMap<(String, Api), Arc<RateBudget>>)>;

fn budgets() -> &'static Budgets {
    static BUDGETS: OnceLock<Budgets> = OnceLock::new();
    BUDGETS.get_or_init(|| Mutex::new((DEFAULT_MAX, HashMap::new())))
}

/// `--max-requests-per-second`: the maximum of every budget made after it.
pub fn set_max(per_second: f64) {
    budgets().lock().expect("budgets lock").0 = per_second;
}

/// The process's budget for `api` in `region`.
pub fn of(region: &str, api: Api) -> Arc<RateBudget> {
    let mut b = budgets().lock().expect("budgets lock");
    let max = b.0;
    b.1.entry((region.to_string(), api))
        .or_insert_with(|| Arc::new(RateBudget::new(max)))
        .clone()
}

/// Every budget the process used: (region, API, report).
pub fn reports() -> Vec<(String, Api, BudgetReport)> {
    let b = budgets().lock().expect("budgets lock");
    let mut out: Vec<_> =
        b.1.iter()
            .map(|((r, a), budget)| (r.clone(), *a, budget.report()))
            .collect();
    out.sort_by(|x, y| (&x.0, x.1 as u8).cmp(&(&y.0, y.1 as u8)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_start_at_the_rate_shared_by_every_caller() {
        let b = Arc::new(RateBudget::new(100.0));
        let start = Instant::now();
        // Four callers, 50 requests each: 200 at 100 a second take 2 s together.
        let mut tasks = vec![];
        for _ in 0..4 {
            let b = b.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..50 {
                    b.acquire().await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let took = start.elapsed().as_secs_f64();
        assert!((1.98..=2.0).contains(&took), "{took}");
        assert_eq!(b.report().requests, 200);
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_halves_the_rate_once_a_second_and_successes_bring_it_back() {
        let b = RateBudget::new(800.0);
        b.throttled();
        b.throttled(); // the same burst
        assert_eq!(b.report().per_second, 400.0);
        assert_eq!(b.report().throttled, 2);
        tokio::time::advance(Duration::from_secs(1)).await;
        b.throttled();
        assert_eq!(b.report().per_second, 200.0);
        for _ in 0..4000 {
            b.succeeded();
        }
        assert_eq!(b.report().per_second, 800.0, "never above the maximum");
        // A second later, throttled again: at half the rate, requests are
        // twice as far apart.
        tokio::time::advance(Duration::from_secs(1)).await;
        b.throttled();
        assert_eq!(b.report().per_second, 400.0);
        let start = Instant::now();
        for _ in 0..41 {
            b.acquire().await;
        }
        let took = start.elapsed().as_secs_f64();
        assert!((0.099..=0.101).contains(&took), "{took}");
    }

    #[test]
    fn a_budget_is_one_per_region_and_api() {
        let a = of("eu-west-9", Api::GetSnapshotBlock);
        let b = of("eu-west-9", Api::GetSnapshotBlock);
        let c = of("eu-west-9", Api::PutSnapshotBlock);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
    }
}
