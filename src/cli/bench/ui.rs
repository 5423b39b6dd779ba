//! Progress on stderr: one indicatif bar per phase, and log lines that show
//! even when stderr is not a terminal (where indicatif hides its bars).

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::Duration;

/// Progress reporting of one benchmark run.
pub struct Ui {
    multi: MultiProgress,
    quiet: bool,
}

impl Ui {
    /// Bars and log lines on stderr.
    pub fn stderr() -> Ui {
        Ui {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            quiet: false,
        }
    }

    /// No output at all (tests).
    #[cfg(test)]
    pub fn hidden() -> Ui {
        Ui {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
            quiet: true,
        }
    }

    /// A bar for a phase of `len` operations.
    pub fn phase_bar(&self, label: &str, len: u64) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(len));
        let style = ProgressStyle::with_template(
            "{msg:>34} [{bar:30}] {pos:>9}/{len:9} {per_sec:>14} {elapsed_precise}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(label.to_string());
        bar
    }

    /// A spinner for work without a count (settling, a subprocess).
    pub fn spinner(&self, label: &str) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new_spinner());
        let style = ProgressStyle::with_template("{spinner} {msg} {elapsed_precise}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        bar.set_message(label.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }

    /// A log line above the bars (or plain on stderr when bars are hidden).
    pub fn log(&self, line: impl AsRef<str>) {
        if self.quiet {
            return;
        }
        if self.multi.is_hidden() {
            eprintln!("{}", line.as_ref());
        } else {
            let _ = self.multi.println(line.as_ref());
        }
    }
}
