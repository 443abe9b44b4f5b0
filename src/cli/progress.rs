//! Progress bars per phase that log lines do not tear, hidden when stderr is not a terminal.

use indicatif::{MultiProgress, ProgressBar, ProgressState, ProgressStyle};

use bilevel::Event;

/// A logger that pauses the progress bars while it writes a line.
struct BarAwareLogger {
    inner: env_logger::Logger,
    bars: MultiProgress,
}

impl log::Log for BarAwareLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.inner.enabled(record.metadata()) {
            self.bars.suspend(|| self.inner.log(record));
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// Installs the logger (`RUST_LOG`, default `warn`) and returns the bars it coordinates with.
pub fn init_logging() -> MultiProgress {
    let bars = MultiProgress::new();
    let inner =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).build();
    let level = inner.filter();
    if log::set_boxed_logger(Box::new(BarAwareLogger {
        inner,
        bars: bars.clone(),
    }))
    .is_ok()
    {
        log::set_max_level(level);
    }
    bars
}

/// Turns training events into one bar per phase: step, loss, steps/s and ETA.
pub struct PhaseBars {
    bars: MultiProgress,
    current: Option<ProgressBar>,
}

impl PhaseBars {
    /// Bars drawn through `bars`.
    pub fn new(bars: MultiProgress) -> Self {
        Self {
            bars,
            current: None,
        }
    }

    /// Handles one event.
    pub fn on_event(&mut self, event: Event<'_>) {
        match event {
            Event::PhaseStart { phase, .. } => {
                let bar = self.bars.add(ProgressBar::new(phase.stop.max_steps));
                let style = ProgressStyle::with_template(
                    "{prefix:>8} [{bar:30}] {pos}/{len} steps  loss {msg}  {rate}  ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .with_key(
                    "rate",
                    |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{:.1} steps/s", state.per_sec());
                    },
                )
                .progress_chars("=> ");
                bar.set_style(style);
                bar.set_prefix(phase.name.clone());
                self.current = Some(bar);
            }
            Event::Check { check, .. } => {
                if let Some(bar) = &self.current {
                    bar.set_position(check.step);
                    bar.set_message(format!("{:.6}", check.loss));
                }
            }
            Event::PhaseEnd { .. } => {
                if let Some(bar) = self.current.take() {
                    bar.finish_and_clear();
                }
            }
        }
    }
}
