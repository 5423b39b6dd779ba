//! Latency over the course of a phase: every operation's due time and
//! response time, summarised per fixed window, listed (the slowest
//! windows) and drawn (SVG), so a stall shows where it happened.

use anyhow::anyhow;
use std::time::{Duration, SystemTime};

/// One successful operation: when it was due (µs after the phase started)
/// and how long from then until its answer (µs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Due time, µs after the phase's start.
    pub due_us: u64,
    /// Response time, µs.
    pub latency_us: u64,
}

/// Latency figures of the operations due within one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Start of the window, µs after the phase's start.
    pub start_us: u64,
    /// Operations due in it.
    pub ops: usize,
    /// Median response time, µs.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// Slowest, µs.
    pub max_us: u64,
}

/// The spread of the per-window p99s of a phase ([`Timeline::spread`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpread {
    /// Windows with at least one operation.
    pub windows: usize,
    /// Windows whose p99 is at or over the target.
    pub over_target: usize,
    /// The median of the windows' p99s, µs.
    pub median_p99_us: u64,
    /// The 90th percentile of the windows' p99s, µs.
    pub p90_p99_us: u64,
}

/// Every operation of a phase, in no particular order.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Wall-clock time the phase started (to match server logs).
    pub started: Option<SystemTime>,
    /// The operations.
    pub samples: Vec<Sample>,
}

/// The `q` quantile (0..=1) of ascending `sorted`, by nearest rank.
pub(super) fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

impl Timeline {
    /// The operations grouped by due time into windows of `width`, in time
    /// order; windows with no operation are left out.
    pub fn windows(&self, width: Duration) -> Vec<Window> {
        let width_us = (width.as_micros() as u64).max(1);
        let mut by_window: std::collections::BTreeMap<u64, Vec<u64>> = Default::default();
        for s in &self.samples {
            by_window
                .entry(s.due_us / width_us)
                .or_default()
                .push(s.latency_us);
        }
        by_window
            .into_iter()
            .map(|(i, mut latencies)| {
                latencies.sort_unstable();
                Window {
                    start_us: i * width_us,
                    ops: latencies.len(),
                    p50_us: quantile(&latencies, 0.5),
                    p99_us: quantile(&latencies, 0.99),
                    max_us: latencies.last().copied().unwrap_or(0),
                }
            })
            .collect()
    }

    /// How the windows' p99s spread: whether a run's p99 comes from a few
    /// bad moments or from every moment being a little slow.
    pub fn spread(&self, width: Duration, target_us: u64) -> WindowSpread {
        let mut p99s: Vec<u64> = self.windows(width).iter().map(|w| w.p99_us).collect();
        p99s.sort_unstable();
        WindowSpread {
            windows: p99s.len(),
            over_target: p99s.iter().filter(|&&p| p >= target_us).count(),
            median_p99_us: quantile(&p99s, 0.5),
            p90_p99_us: quantile(&p99s, 0.9),
        }
    }

    /// Up to `n` windows with the highest p99, slowest first.
    pub fn slowest(&self, width: Duration, n: usize) -> Vec<Window> {
        let mut windows = self.windows(width);
        windows.sort_by(|a, b| b.p99_us.cmp(&a.p99_us).then(a.start_us.cmp(&b.start_us)));
        windows.truncate(n);
        windows
    }

    /// The wall-clock time (UTC, `HH:MM:SS.mmm`) of `offset_us` into the
    /// phase, if its start is known.
    pub fn wall_clock(&self, offset_us: u64) -> Option<String> {
        let at = self.started? + Duration::from_micros(offset_us);
        let since_epoch = at.duration_since(SystemTime::UNIX_EPOCH).ok()?;
        let secs_of_day = since_epoch.as_secs() % 86_400;
        Some(format!(
            "{:02}:{:02}:{:02}.{:03}",
            secs_of_day / 3600,
            secs_of_day / 60 % 60,
            secs_of_day % 60,
            since_epoch.subsec_millis()
        ))
    }

    /// Draws p50, p99 and the maximum per window against time, on a log
    /// scale of milliseconds, with the target as a dashed line.
    pub fn render_svg(
        &self,
        title: &str,
        width: Duration,
        target_us: u64,
    ) -> anyhow::Result<String> {
        use plotters::prelude::*;
        use plotters::style::text_anchor::{HPos, Pos, VPos};
        let windows = self.windows(width);
        let (w, h) = (1000i32, 460i32);
        let (left, right, top, bottom) = (70i32, w - 20, 50i32, h - 50);
        let end_us = windows
            .last()
            .map_or(1, |last| last.start_us + width.as_micros() as u64)
            .max(1);
        let highest = windows
            .iter()
            .map(|x| x.max_us)
            .max()
            .unwrap_or(1)
            .max(target_us * 2);
        // Decades of milliseconds from 0.1 ms up to past the slowest.
        let lo = -1i32;
        let hi = ((highest as f64 / 1000.0).log10().ceil() as i32).max(lo + 1);
        let x_of = |us: u64| left + ((us as f64 / end_us as f64) * f64::from(right - left)) as i32;
        let y_of = |us: u64| {
            let ms = (us.max(1) as f64 / 1000.0)
                .log10()
                .clamp(f64::from(lo), f64::from(hi));
            bottom - ((ms - f64::from(lo)) / f64::from(hi - lo) * f64::from(bottom - top)) as i32
        };
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (w as u32, h as u32)).into_drawing_area();
            let err = |e: DrawingAreaErrorKind<_>| anyhow!("drawing the timeline: {e:?}");
            root.fill(&WHITE).map_err(err)?;
            let big = TextStyle::from(("sans-serif", 18).into_font()).color(&BLACK);
            let small = TextStyle::from(("sans-serif", 13).into_font()).color(&BLACK);
            root.draw(&Text::new(title.to_string(), (left, 12), big))
                .map_err(err)?;
            let grey = RGBColor(210, 210, 210);
            for k in lo..=hi {
                let us = (10f64.powi(k) * 1000.0) as u64;
                let y = y_of(us);
                root.draw(&PathElement::new(vec![(left, y), (right, y)], grey))
                    .map_err(err)?;
                let label = if k < 0 {
                    format!("{} ms", 10f64.powi(k))
                } else {
                    format!("{} ms", 10u64.pow(k as u32))
                };
                root.draw(&Text::new(
                    label,
                    (left - 6, y),
                    small.pos(Pos::new(HPos::Right, VPos::Center)),
                ))
                .map_err(err)?;
            }
            let seconds = end_us / 1_000_000;
            let step = (seconds / 10).max(1);
            for s in (0..=seconds).step_by(step as usize) {
                let x = x_of(s * 1_000_000);
                root.draw(&PathElement::new(vec![(x, bottom), (x, bottom + 4)], BLACK))
                    .map_err(err)?;
                root.draw(&Text::new(
                    format!("{s} s"),
                    (x, bottom + 8),
                    small.pos(Pos::new(HPos::Center, VPos::Top)),
                ))
                .map_err(err)?;
            }
            root.draw(&PathElement::new(
                vec![(left, top), (left, bottom), (right, bottom)],
                BLACK,
            ))
            .map_err(err)?;
            // The target, dashed.
            let ty = y_of(target_us);
            let red = RGBColor(200, 40, 40);
            let mut x = left;
            while x < right {
                root.draw(&PathElement::new(
                    vec![(x, ty), ((x + 8).min(right), ty)],
                    red.stroke_width(2),
                ))
                .map_err(err)?;
                x += 14;
            }
            type Series = (&'static str, RGBColor, fn(&Window) -> u64);
            let series: [Series; 3] = [
                ("p50", RGBColor(66, 114, 196), |w| w.p50_us),
                ("p99", RGBColor(230, 140, 40), |w| w.p99_us),
                ("max", RGBColor(120, 120, 120), |w| w.max_us),
            ];
            for (i, (name, color, value)) in series.iter().enumerate() {
                let points: Vec<(i32, i32)> = windows
                    .iter()
                    .map(|win| (x_of(win.start_us), y_of(value(win))))
                    .collect();
                root.draw(&PathElement::new(points, color.stroke_width(2)))
                    .map_err(err)?;
                let lx = right - 260 + 70 * i as i32;
                root.draw(&PathElement::new(
                    vec![(lx, top - 12), (lx + 20, top - 12)],
                    color.stroke_width(3),
                ))
                .map_err(err)?;
                root.draw(&Text::new(
                    name.to_string(),
                    (lx + 24, top - 12),
                    small.pos(Pos::new(HPos::Left, VPos::Center)),
                ))
                .map_err(err)?;
            }
            root.draw(&Text::new(
                format!(
                    "response time per {} ms window of due time; dashed: the {} ms target",
                    width.as_millis(),
                    target_us as f64 / 1000.0
                ),
                (left, h - 18),
                small,
            ))
            .map_err(err)?;
            root.present().map_err(err)?;
        }
        Ok(svg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn timeline(samples: &[(u64, u64)]) -> Timeline {
        Timeline {
            started: None,
            samples: samples
                .iter()
                .map(|&(due_us, latency_us)| Sample { due_us, latency_us })
                .collect(),
        }
    }

    #[test]
    fn the_spread_counts_windows_over_the_target_and_ranks_their_p99s() {
        // Ten windows of 100 ms: nine with every answer at 1 ms, one at 9 ms.
        let mut samples = Vec::new();
        for w in 0..10u64 {
            let latency = if w == 7 { 9_000 } else { 1_000 };
            for i in 0..20 {
                samples.push((w * 100_000 + i * 1_000, latency));
            }
        }
        let spread = timeline(&samples).spread(Duration::from_millis(100), 5_000);
        assert_eq!(
            spread,
            WindowSpread {
                windows: 10,
                over_target: 1,
                median_p99_us: 1_000,
                p90_p99_us: 1_000,
            }
        );
        let none = timeline(&[]).spread(Duration::from_millis(100), 5_000);
        assert_eq!(
            (none.windows, none.over_target, none.median_p99_us),
            (0, 0, 0)
        );
    }

    #[test]
    fn windows_group_by_due_time_and_the_slowest_come_first() {
        let t = timeline(&[
            (10, 5),
            (99_999, 7),
            (100_000, 50),
            (250_000, 1),
            (260_000, 3),
        ]);
        let windows = t.windows(Duration::from_millis(100));
        assert_eq!(
            windows,
            vec![
                Window {
                    start_us: 0,
                    ops: 2,
                    p50_us: 5,
                    p99_us: 7,
                    max_us: 7
                },
                Window {
                    start_us: 100_000,
                    ops: 1,
                    p50_us: 50,
                    p99_us: 50,
                    max_us: 50
                },
                Window {
                    start_us: 200_000,
                    ops: 2,
                    p50_us: 1,
                    p99_us: 3,
                    max_us: 3
                },
            ]
        );
        let slowest = t.slowest(Duration::from_millis(100), 2);
        assert_eq!(
            slowest.iter().map(|w| w.start_us).collect::<Vec<_>>(),
            vec![100_000, 0]
        );
    }

    #[test]
    fn wall_clock_is_utc_time_of_day() {
        let t = Timeline {
            started: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 + 3_723)),
            samples: Vec::new(),
        };
        assert_eq!(t.wall_clock(456_000).as_deref(), Some("01:02:03.456"));
        assert_eq!(Timeline::default().wall_clock(0), None);
    }

    #[test]
    fn the_svg_has_a_line_per_series() {
        let t = timeline(&[(0, 800), (150_000, 12_000), (2_100_000, 900)]);
        let svg = t
            .render_svg("B paced", Duration::from_millis(100), 5_000)
            .unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        for label in ["p50", "p99", "max", "B paced"] {
            assert!(svg.contains(label), "{label} missing");
        }
        assert!(Timeline::default()
            .render_svg("empty", Duration::from_millis(100), 5_000)
            .is_ok());
    }

    proptest! {
        /// Every operation lands in exactly one window, and each window's
        /// figures are ordered p50 <= p99 <= max and come from its own
        /// operations.
        #[test]
        fn windows_account_for_every_operation(
            samples in proptest::collection::vec((0u64..5_000_000, 1u64..1_000_000), 0..300),
            width_ms in 1u64..2_000,
        ) {
            let t = timeline(&samples);
            let width = Duration::from_millis(width_ms);
            let windows = t.windows(width);
            prop_assert_eq!(windows.iter().map(|w| w.ops).sum::<usize>(), samples.len());
            for w in &windows {
                prop_assert!(w.p50_us <= w.p99_us && w.p99_us <= w.max_us);
                let mine: Vec<u64> = samples
                    .iter()
                    .filter(|(due, _)| *due >= w.start_us && *due < w.start_us + width_ms * 1000)
                    .map(|(_, l)| *l)
                    .collect();
                prop_assert_eq!(mine.len(), w.ops);
                prop_assert_eq!(mine.iter().copied().max(), Some(w.max_us));
            }
        }
    }
}
