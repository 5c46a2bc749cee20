//! Progress of long work (an index build, a bulk insert, a vector index rebuild, a
//! bench's load): a bar on standard error when a front end at a terminal turned bars on
//! ([`show_bars`]: `remdb sql`, `remdb shell`, the benches), else a log line at most
//! every few seconds (a server's log, an embedding application). Work under
//! [`MIN_SHOWN`] steps shows nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Work of fewer steps than this is quick: no bar and no log line.
pub const MIN_SHOWN: u64 = 10_000;

/// How often a log line reports work without a bar.
const LOG_EVERY: Duration = Duration::from_secs(5);

static BARS: AtomicBool = AtomicBool::new(false);

/// Draw bars from now on, when standard error is a terminal.
pub fn show_bars() {
    use std::io::IsTerminal;
    BARS.store(std::io::stderr().is_terminal(), Ordering::Relaxed);
}

/// One piece of long work.
pub struct Progress {
    what: String,
    total: Option<u64>,
    done: u64,
    bar: Option<ProgressBar>,
    started: Instant,
    logged: Instant,
}

impl Progress {
    /// Work of `total` steps (`None`: not known in advance, counted as it goes).
    pub fn start(what: impl Into<String>, total: Option<u64>) -> Progress {
        let now = Instant::now();
        let mut progress = Progress {
            what: what.into(),
            total,
            done: 0,
            bar: None,
            started: now,
            logged: now,
        };
        if total.is_some_and(|t| t >= MIN_SHOWN) {
            progress.bar = progress.new_bar();
        }
        progress
    }

    /// A bar, when bars are on.
    fn new_bar(&self) -> Option<ProgressBar> {
        if !BARS.load(Ordering::Relaxed) {
            return None;
        }
        let bar = match self.total {
            Some(total) => ProgressBar::new(total).with_style(
                ProgressStyle::with_template(
                    "{msg:>24} [{bar:30}] {human_pos}/{human_len} {elapsed} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("#>-"),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{msg:>24} {spinner} {human_pos} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        bar.set_message(self.what.clone());
        Some(bar)
    }

    /// Whether the work is long enough to be shown.
    fn shown(&self) -> bool {
        self.total.unwrap_or(self.done) >= MIN_SHOWN
    }

    /// `done` steps of the work are done.
    pub fn set(&mut self, done: u64) {
        self.done = done;
        // Work of unknown size gets its bar once it is long.
        if self.bar.is_none() && self.total.is_none() && self.shown() {
            self.bar = self.new_bar();
        }
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            return;
        }
        if self.shown() && self.logged.elapsed() >= LOG_EVERY {
            self.logged = Instant::now();
            match self.total {
                Some(total) => tracing::info!(done, total, "{}", self.what),
                None => tracing::info!(done, "{}", self.what),
            }
        }
    }

    /// `n` more steps are done.
    pub fn add(&mut self, n: u64) {
        self.set(self.done + n);
    }

    /// The work ended (also when it failed: the bar is cleared either way).
    pub fn finish(self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if self.shown() {
            let seconds = self.started.elapsed().as_secs_f64();
            tracing::info!(done = self.done, seconds, "{} done", self.what);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar
            && !bar.is_finished()
        {
            bar.finish_and_clear();
        }
    }
}
