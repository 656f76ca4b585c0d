//! The background sweeper: purges expired sessions every interval, and reports what it purged (a
//! [`SweepReport`] on a watch channel, and a tracing event). A sweep runs purge statements of at
//! most the batch size (and the dialect's statement maximum) until one comes back short, yielding
//! between them (or resting, with a work share under 100 %: [`SweeperOptions::with_work_share`]);
//! each statement is bounded by what expired (`Inner::purge`), so a sweep that finds nothing costs
//! one index probe.
//!
//! It holds only a `Weak` reference to the store, so dropping the last [`SqlStore`](crate::SqlStore)
//! clone stops it; the store also aborts it on drop.

use std::sync::Weak;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::options::SweeperOptions;
use crate::store::Inner;

/// What the sweeper has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweepReport {
    /// Completed sweeps (each runs batches until one comes back short).
    pub sweeps: u64,
    /// Sessions deleted by the last sweep.
    pub last_purged: u64,
    /// Sessions deleted by every sweep so far.
    pub total_purged: u64,
    /// Purge statements the last sweep ran (each one transaction deleting at most the batch
    /// size, and at most 1,000 sessions).
    pub last_statements: u64,
    /// Time the last sweep's statements took.
    pub last_busy: Duration,
    /// Time the last sweep rested between its statements, so that they took at most
    /// [`SweeperOptions::work_share`] of its time (zero at the default, 100 %).
    pub last_rested: Duration,
    /// The error that ended the last sweep early, if any (the next sweep tries again).
    pub last_error: Option<String>,
}

/// The sweeper task's handle; aborts the task when dropped.
#[derive(Debug)]
pub(crate) struct Sweeper {
    task: Option<AbortHandle>,
    reports: watch::Receiver<SweepReport>,
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Sweeper {
    /// No sweeper: reports stay at their default.
    pub(crate) fn off() -> Self {
        Self {
            task: None,
            reports: watch::channel(SweepReport::default()).1,
        }
    }

    /// Starts sweeping `store` with `options` (must run inside a tokio runtime).
    pub(crate) fn start(store: Weak<Inner>, options: SweeperOptions) -> Self {
        let (tx, reports) = watch::channel(SweepReport::default());
        let task = tokio::spawn(async move {
            let batch = options.batch();
            let share = options.work_share();
            loop {
                tokio::time::sleep(options.interval()).await;
                let (mut purged, mut statements) = (0u64, 0u64);
                let (mut busy, mut rested) = (Duration::ZERO, Duration::ZERO);
                let mut error = None;
                loop {
                    // One statement per call, the store held only while it runs: the rests
                    // between statements keep no dropped store alive.
                    let Some(inner) = store.upgrade() else { return };
                    let take = batch.min(inner.purge_statement_max());
                    let result = inner.purge(take).await;
                    drop(inner);
                    match result {
                        Ok(done) => {
                            purged += done.sessions;
                            statements += done.statements;
                            busy += done.busy;
                            if done.sessions < take as u64 {
                                break;
                            }
                            // Between statements, let the runtime's other tasks (requests) run,
                            // or rest for the work share.
                            let rest = rest_after(done.busy, share);
                            if rest.is_zero() {
                                tokio::task::yield_now().await;
                            } else {
                                let start = tokio::time::Instant::now();
                                tokio::time::sleep(rest).await;
                                rested += start.elapsed();
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "session sweeper: purge failed");
                            error = Some(e.to_string());
                            break;
                        }
                    }
                }
                if purged > 0 {
                    tracing::info!(purged, "session sweeper purged expired sessions");
                }
                tx.send_modify(|r| {
                    r.sweeps += 1;
                    r.last_purged = purged;
                    r.total_purged += purged;
                    r.last_statements = statements;
                    r.last_busy = busy;
                    r.last_rested = rested;
                    r.last_error = error;
                });
            }
        });
        Self {
            task: Some(task.abort_handle()),
            reports,
        }
    }

    /// A receiver of the reports.
    pub(crate) fn reports(&self) -> watch::Receiver<SweepReport> {
        self.reports.clone()
    }
}

/// The rest after a purge statement that took `took`, for statements to take at most
/// `work_share` percent of the time (100 or more: none; 0 counts as 1).
fn rest_after(took: Duration, work_share: u8) -> Duration {
    let share = u32::from(work_share.max(1));
    if share >= 100 {
        return Duration::ZERO;
    }
    took.checked_mul(100 - share)
        .map_or(Duration::MAX, |d| d / share)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rests_for_the_share() {
        let ms = Duration::from_millis;
        assert_eq!(rest_after(ms(10), 100), Duration::ZERO);
        assert_eq!(rest_after(ms(10), 200), Duration::ZERO);
        assert_eq!(rest_after(ms(10), 50), ms(10));
        assert_eq!(rest_after(ms(10), 25), ms(30));
        assert_eq!(rest_after(ms(10), 0), ms(990));
        assert_eq!(rest_after(Duration::MAX, 1), Duration::MAX);
    }
}
