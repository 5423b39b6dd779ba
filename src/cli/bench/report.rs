//! The result of a storage benchmark run: figures per section with their
//! ratios, printed as tables, written as JSON and drawn as an SVG chart.

use anyhow::anyhow;
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Everything one run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The machine it ran on.
    pub machine: Machine,
    /// The sizes and settings used.
    pub settings: Settings,
    /// Whether each peer ran, and why not.
    pub peers: Vec<PeerStatus>,
    /// Figures by section.
    pub sections: Vec<Section>,
    /// The db_bench command lines, in order.
    pub commands: Vec<String>,
    /// Remarks found during the run (e.g. reads that found fewer rows).
    pub notes: Vec<String>,
}

/// The machine and the disk under the data directory.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: usize,
    /// `model name` of /proc/cpuinfo.
    pub cpu_model: String,
    /// `MemTotal` of /proc/meminfo, in bytes.
    pub memory_bytes: u64,
    /// Kernel release.
    pub kernel: String,
    /// Device, file system type and mount point holding the data directory.
    pub data_filesystem: String,
    /// The data directory.
    pub data_dir: String,
}

/// Sizes and settings of the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// Operations per key-value phase (db_bench's `--num`).
    pub ops: u64,
    /// Wide-row partitions.
    pub partitions: u64,
    /// Rows per wide partition.
    pub rows_per_partition: u64,
    /// Concurrent writers of the group-commit figure.
    pub durable_writers: usize,
    /// Time limit of each durable phase, in seconds.
    pub durable_secs: f64,
    /// ringdb's periodic fsync interval in the key-value shape, in ms.
    pub periodic_sync_ms: u64,
    /// Seed of key choices.
    pub seed: u64,
}

/// One peer's fate in this run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerStatus {
    /// `fjall` or `db_bench`.
    pub name: String,
    /// Version, when known.
    pub version: Option<String>,
    /// Why it did not run (all or part of it), if it did not.
    pub skipped: Option<String>,
}

/// A table of figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Section {
    /// Heading.
    pub title: String,
    /// Unit of the figures (`ops/s`, `x`).
    pub unit: String,
    /// True when a smaller figure is better (write amplification).
    pub lower_is_better: bool,
    /// The rows.
    pub rows: Vec<Row>,
    /// Share of the machine's CPU time that other processes used while the
    /// section ran (a busy machine makes figures suspect).
    pub other_cpu_share: Option<f64>,
}

/// One workload, its figure per engine and ringdb's ratios to its peers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// What was measured.
    pub workload: String,
    /// ringdb's figure.
    pub ringdb: Option<f64>,
    /// fjall's figure.
    pub fjall: Option<f64>,
    /// db_bench's figure.
    pub db_bench: Option<f64>,
    /// ringdb / fjall.
    pub ringdb_vs_fjall: Option<f64>,
    /// ringdb / db_bench.
    pub ringdb_vs_db_bench: Option<f64>,
    /// How the figures were taken, or what differed.
    pub note: String,
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() && b.is_finite() => Some(a / b),
        _ => None,
    }
}

impl Row {
    /// A row; the ratios are computed from the figures.
    pub fn new(
        workload: impl Into<String>,
        ringdb: Option<f64>,
        fjall: Option<f64>,
        db_bench: Option<f64>,
        note: impl Into<String>,
    ) -> Row {
        Row {
            workload: workload.into(),
            ringdb,
            fjall,
            db_bench,
            ringdb_vs_fjall: ratio(ringdb, fjall),
            ringdb_vs_db_bench: ratio(ringdb, db_bench),
            note: note.into(),
        }
    }
}

fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn format_figure(v: Option<f64>, unit: &str) -> String {
    match v {
        None => "-".into(),
        Some(v) if unit == "ops/s" => group_thousands(v.round() as u64),
        Some(v) => format!("{v:.2}"),
    }
}

fn format_ratio(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |r| format!("{r:.2}x"))
}

impl Section {
    /// The section as a text table.
    pub fn table(&self) -> Table {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED);
        let u = &self.unit;
        table.set_header(vec![
            "workload".to_string(),
            format!("ringdb {u}"),
            format!("fjall {u}"),
            format!("db_bench {u}"),
            "ringdb/fjall".into(),
            "ringdb/db_bench".into(),
            "note".into(),
        ]);
        for r in &self.rows {
            table.add_row(vec![
                Cell::new(&r.workload),
                Cell::new(format_figure(r.ringdb, u)).set_alignment(CellAlignment::Right),
                Cell::new(format_figure(r.fjall, u)).set_alignment(CellAlignment::Right),
                Cell::new(format_figure(r.db_bench, u)).set_alignment(CellAlignment::Right),
                Cell::new(format_ratio(r.ringdb_vs_fjall)).set_alignment(CellAlignment::Right),
                Cell::new(format_ratio(r.ringdb_vs_db_bench)).set_alignment(CellAlignment::Right),
                Cell::new(&r.note),
            ]);
        }
        table
    }
}

impl Report {
    /// All sections as text.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for s in &self.sections {
            let better = if s.lower_is_better {
                "lower is better"
            } else {
                "higher is better"
            };
            let busy = s
                .other_cpu_share
                .map(|b| format!("; other processes used {:.0}% of CPU time", b * 100.0))
                .unwrap_or_default();
            out.push_str(&format!("\n{} ({}, {better}{busy})\n", s.title, s.unit));
            out.push_str(&s.table().to_string());
            out.push('\n');
        }
        for p in &self.peers {
            if let Some(why) = &p.skipped {
                out.push_str(&format!("\n{} skipped: {why}\n", p.name));
            }
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        out
    }

    /// Reads a report written by [`Report::write_json`].
    pub fn read_json(path: &Path) -> anyhow::Result<Report> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow!("reading {}: {e}", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|e| anyhow!("{} is not a saved report: {e}", path.display()))
    }

    /// Writes the report as pretty JSON.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n").map_err(|e| anyhow!("writing {}: {e}", path.display()))
    }

    /// Bars of ringdb's advantage over each peer: the ratio for throughput,
    /// its inverse where lower is better. One entry per (row, peer).
    pub fn advantages(&self) -> Vec<(String, &'static str, f64)> {
        let mut out = Vec::new();
        for s in &self.sections {
            for r in &s.rows {
                for (peer, v) in [
                    ("fjall", r.ringdb_vs_fjall),
                    ("db_bench", r.ringdb_vs_db_bench),
                ] {
                    if let Some(v) = v.filter(|v| *v > 0.0) {
                        let adv = if s.lower_is_better { 1.0 / v } else { v };
                        out.push((r.workload.clone(), peer, adv));
                    }
                }
            }
        }
        out
    }

    /// Draws [`Report::advantages`] as horizontal bars on a log scale
    /// around 1x, as SVG.
    pub fn render_svg(&self) -> anyhow::Result<String> {
        use plotters::prelude::*;
        use plotters::style::text_anchor::{HPos, Pos, VPos};
        let bars = self.advantages();
        let (width, label_w, row_h, top, bottom) = (1100u32, 430i32, 22i32, 70i32, 50i32);
        let height = (top + bottom + row_h * bars.len().max(1) as i32) as u32;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
            let err = |e: DrawingAreaErrorKind<_>| anyhow!("drawing the chart: {e:?}");
            root.fill(&WHITE).map_err(err)?;
            let longest = bars
                .iter()
                .map(|(_, _, v)| v.log2().abs())
                .fold(0.0f64, f64::max);
            // Room for the value label beyond the longest bar.
            let max_log = (longest + 0.6).clamp(1.0, 8.0).ceil();
            let plot_l = label_w + 10;
            let plot_r = width as i32 - 30;
            let center = (plot_l + plot_r) / 2;
            let scale = f64::from(plot_r - center) / max_log;
            let x_of = |v: f64| center + (v.log2().clamp(-max_log, max_log) * scale) as i32;
            let title = TextStyle::from(("sans-serif", 22).into_font()).color(&BLACK);
            root.draw(&Text::new(
                "ringdb vs peers (ratio, log scale; right of 1x = ringdb better)".to_string(),
                (20, 14),
                title,
            ))
            .map_err(err)?;
            let small = TextStyle::from(("sans-serif", 15).into_font()).color(&BLACK);
            let legend = "blue: vs fjall   orange: vs RocksDB db_bench   (write amplification inverted: peer/ringdb)";
            root.draw(&Text::new(legend.to_string(), (20, 38), small.clone()))
                .map_err(err)?;
            let plot_bottom = top + row_h * bars.len() as i32;
            for k in -(max_log as i32)..=(max_log as i32) {
                let v = 2f64.powi(k);
                let x = x_of(v);
                let style = if k == 0 {
                    BLACK.stroke_width(2)
                } else {
                    RGBColor(200, 200, 200).stroke_width(1)
                };
                root.draw(&PathElement::new(
                    vec![(x, top - 6), (x, plot_bottom)],
                    style,
                ))
                .map_err(err)?;
                let label = if k >= 0 {
                    format!("{}x", 1u64 << k)
                } else {
                    format!("1/{}x", 1u64 << -k)
                };
                root.draw(&Text::new(
                    label,
                    (x, plot_bottom + 8),
                    small.pos(Pos::new(HPos::Center, VPos::Top)),
                ))
                .map_err(err)?;
            }
            let blue = RGBColor(66, 114, 196);
            let orange = RGBColor(230, 140, 40);
            for (i, (workload, peer, v)) in bars.iter().enumerate() {
                let y = top + row_h * i as i32;
                let label = format!("{workload} (vs {peer})");
                root.draw(&Text::new(
                    label,
                    (label_w, y + row_h / 2),
                    small.pos(Pos::new(HPos::Right, VPos::Center)),
                ))
                .map_err(err)?;
                let color = if *peer == "fjall" { blue } else { orange };
                let x = x_of(*v);
                let (x0, x1) = (center.min(x), center.max(x).max(center.min(x) + 1));
                root.draw(&Rectangle::new(
                    [(x0, y + 3), (x1, y + row_h - 3)],
                    color.filled(),
                ))
                .map_err(err)?;
                let (tx, anchor) = if *v >= 1.0 {
                    (x1 + 4, HPos::Left)
                } else {
                    (x0 - 4, HPos::Right)
                };
                root.draw(&Text::new(
                    format!("{v:.2}x"),
                    (tx, y + row_h / 2),
                    small.pos(Pos::new(anchor, VPos::Center)),
                ))
                .map_err(err)?;
            }
            root.present().map_err(err)?;
        }
        Ok(svg)
    }
}

/// Reads what can be known of the machine without extra tools.
pub fn probe_machine(data_dir: &Path) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_bytes = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        memory_bytes,
        kernel,
        data_filesystem: filesystem_of(&dir).unwrap_or_else(|| "unknown".into()),
        data_dir: dir.display().to_string(),
    }
}

/// `device fstype mountpoint` of the mount holding `path` (the longest
/// mount point that is a prefix of it).
pub fn filesystem_of(path: &Path) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, mnt, fs) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(mnt)
                .then(|| (mnt.len(), format!("{dev} {fs} {mnt}")))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, s)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            machine: Machine::default(),
            settings: Settings {
                ops: 10,
                partitions: 1,
                rows_per_partition: 1,
                durable_writers: 2,
                durable_secs: 1.0,
                periodic_sync_ms: 1000,
                seed: 1,
            },
            peers: vec![],
            sections: vec![
                Section {
                    title: "kv".into(),
                    unit: "ops/s".into(),
                    lower_is_better: false,
                    rows: vec![Row::new("fill", Some(200.0), Some(100.0), None, "")],
                    other_cpu_share: Some(0.25),
                },
                Section {
                    title: "wa".into(),
                    unit: "x".into(),
                    lower_is_better: true,
                    rows: vec![Row::new("wa", Some(4.0), Some(2.0), Some(8.0), "")],
                    other_cpu_share: None,
                },
            ],
            commands: vec![],
            notes: vec![],
        }
    }

    #[test]
    fn ratios_tables_and_chart() {
        let r = sample();
        assert_eq!(r.sections[0].rows[0].ringdb_vs_fjall, Some(2.0));
        assert_eq!(r.sections[0].rows[0].ringdb_vs_db_bench, None);
        let adv = r.advantages();
        assert_eq!(adv.len(), 3);
        assert_eq!(adv[1].2, 0.5); // write amp 4 vs 2: ringdb worse
        assert_eq!(adv[2].2, 2.0); // write amp 4 vs 8: ringdb better
        let text = r.render_text();
        assert!(text.contains("2.00x") && text.contains("lower is better"));
        assert!(text.contains("other processes used 25% of CPU time"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        r.write_json(&path).unwrap();
        let back = Report::read_json(&path).unwrap();
        assert_eq!(back.render_text(), r.render_text());
        std::fs::write(&path, "{").unwrap();
        assert!(Report::read_json(&path).is_err());
        let svg = r.render_svg().unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("fill (vs fjall)"));
        assert_eq!(group_thousands(1234567), "1,234,567");
        assert_eq!(group_thousands(12), "12");
    }
}
