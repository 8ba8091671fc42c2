//! The table: printed, and written to BENCHMARKS.md with the machine, the
//! date and the command that reproduces it.

use std::fmt::Write as _;

pub struct Row {
    pub scenario: &'static str,
    pub figure: String,
    pub unit: &'static str,
    /// Median, min, max of the repeated runs; `None` when not measured.
    pub values: Option<(f64, f64, f64)>,
    /// The target as DESIGN.md states it, and whether it is met.
    pub target: String,
    pub verdict: String,
}

pub fn stats(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let median = if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    };
    (median, xs[0], xs[n - 1])
}

fn num(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | figure | unit | median | min–max | target | verdict |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let (median, range) = match r.values {
            Some((m, lo, hi)) => (num(m), format!("{}–{}", num(lo), num(hi))),
            None => ("-".into(), "-".into()),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.scenario, r.figure, r.unit, median, range, r.target, r.verdict
        );
    }
    out
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem_gib:.1} GiB memory")
}

pub fn write_markdown(rows: &[Row], command: &str, notes: &[String]) -> anyhow::Result<()> {
    let mut md = String::from("# gengate benchmarks\n\n");
    let _ = writeln!(
        md,
        "- Date: {}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    let _ = writeln!(md, "- Machine: {}", machine());
    let _ = writeln!(md, "- Command: `{command}`");
    md.push_str(
        "- Each figure is the median of repeated runs taken in this one run; ratios compare figures \
         measured side by side. The machine is shared and noisy: compare ratios, not single times.\n\n",
    );
    md.push_str(&table(rows));
    if !notes.is_empty() {
        md.push_str("\n## Notes\n\n");
        for n in notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    std::fs::write(crate::gateway::workspace_root().join("BENCHMARKS.md"), md)?;
    Ok(())
}
