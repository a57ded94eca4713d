//! Results: one JSON file and one Markdown file per run, plus a latency plot (SVG) for
//! every scenario that measured latency.

use anyhow::Result;
use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;

/// A histogram as base64 (HdrHistogram V2), so workers can hand theirs over.
pub fn encode_histogram(h: &Histogram<u64>) -> Result<String> {
    let mut bytes = Vec::new();
    V2Serializer::new().serialize(h, &mut bytes)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Reverses [`encode_histogram`].
pub fn decode_histogram(text: &str) -> Result<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(text)?;
    Ok(Deserializer::new().deserialize(&mut bytes.as_slice())?)
}

/// One measured row of a scenario.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// Scenario id (`S3`).
    pub scenario: String,
    /// What was measured (`tether 1 node W=4`).
    pub case: String,
    /// Named figures.
    pub figures: serde_json::Map<String, Value>,
    /// Latency histogram, when measured.
    #[serde(skip)]
    pub latency: Option<Histogram<u64>>,
}

/// Writes `report.json`, `report.md` and one `latency-<scenario>.svg` per scenario.
pub fn write(dir: &Path, machine: &Value, rows: &[Row]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::json!({"machine": machine, "rows": rows});
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    let mut md = String::from("# Tether benchmark report\n\n");
    let _ = writeln!(md, "Machine: `{machine}`\n");
    let mut scenarios: Vec<&str> = rows.iter().map(|r| r.scenario.as_str()).collect();
    scenarios.dedup();
    for scenario in scenarios {
        let rows: Vec<&Row> = rows.iter().filter(|r| r.scenario == scenario).collect();
        let mut keys: Vec<String> = Vec::new();
        for row in &rows {
            for key in row.figures.keys() {
                if !keys.contains(key) {
                    keys.push(key.clone());
                }
            }
        }
        let _ = writeln!(md, "## {scenario}\n");
        let _ = writeln!(md, "| case | {} |", keys.join(" | "));
        let _ = writeln!(md, "|---|{}", "---|".repeat(keys.len()));
        for row in &rows {
            let cells: Vec<String> = keys
                .iter()
                .map(|k| row.figures.get(k).map_or(String::new(), show))
                .collect();
            let _ = writeln!(md, "| {} | {} |", row.case, cells.join(" | "));
        }
        md.push('\n');
        let plotted: Vec<(&str, &Histogram<u64>)> = rows
            .iter()
            .filter_map(|r| r.latency.as_ref().map(|h| (r.case.as_str(), h)))
            .collect();
        if !plotted.is_empty() {
            let file = format!("latency-{scenario}.svg");
            std::fs::write(dir.join(&file), latency_svg(scenario, &plotted))?;
            let _ = writeln!(md, "![{scenario} latency]({file})\n");
        }
    }
    std::fs::write(dir.join("report.md"), md)?;
    Ok(())
}

fn show(value: &Value) -> String {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() != 0.0 && f.abs() < 1000.0 => format!("{f:.2}"),
            Some(f) if f.fract() != 0.0 => format!("{f:.0}"),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Latency by percentile (x: 0 .. 99.99 % on a log scale of 1/(1-q), y: log µs).
pub fn latency_svg(title: &str, series: &[(&str, &Histogram<u64>)]) -> String {
    const W: f64 = 720.0;
    const H: f64 = 420.0;
    const LEFT: f64 = 70.0;
    const BOTTOM: f64 = 50.0;
    let quantiles: Vec<f64> = (0..=400)
        .map(|i| 1.0 - 10f64.powf(-(i as f64) / 100.0))
        .collect();
    let max_us = series
        .iter()
        .map(|(_, h)| h.max().max(10))
        .max()
        .unwrap_or(10) as f64;
    let y_top = 10f64.powf(max_us.log10().ceil());
    let x = |q: f64| LEFT + (-(1.0 - q).log10() / 4.0) * (W - LEFT - 20.0);
    let y = |us: f64| H - BOTTOM - (us.max(1.0).log10() / y_top.log10()) * (H - BOTTOM - 30.0);
    let colors = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
    ];
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{}" y="18" text-anchor="middle" font-size="14">{title}: latency by percentile</text>"#,
        W / 2.0
    );
    for (label, q) in [
        ("50%", 0.5),
        ("90%", 0.9),
        ("99%", 0.99),
        ("99.9%", 0.999),
        ("99.99%", 0.9999),
    ] {
        let _ = write!(
            svg,
            r##"<line x1="{0}" x2="{0}" y1="30" y2="{1}" stroke="#ddd"/><text x="{0}" y="{2}" text-anchor="middle">{label}</text>"##,
            x(q),
            H - BOTTOM,
            H - BOTTOM + 18.0
        );
    }
    let mut tick = 1.0;
    while tick <= y_top {
        let label = if tick >= 1000.0 {
            format!("{} ms", tick / 1000.0)
        } else {
            format!("{tick} µs")
        };
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{0}" y1="{1}" y2="{1}" stroke="#eee"/><text x="{2}" y="{3}" text-anchor="end">{label}</text>"##,
            W - 20.0,
            y(tick),
            LEFT - 6.0,
            y(tick) + 4.0
        );
        tick *= 10.0;
    }
    for (i, (label, h)) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        let points: Vec<String> = quantiles
            .iter()
            .map(|q| format!("{:.1},{:.1}", x(*q), y(h.value_at_quantile(*q) as f64)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" fill="{color}">{label}</text>"#,
            LEFT + 10.0,
            40.0 + 16.0 * i as f64
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_survive_the_trip_between_processes() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for v in [10, 20, 30, 4000] {
            h.record(v).unwrap();
        }
        let back = decode_histogram(&encode_histogram(&h).unwrap()).unwrap();
        assert_eq!(back.len(), 4);
        assert_eq!(back.max(), h.max());
    }

    #[test]
    fn the_plot_is_an_svg_with_one_line_per_series() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        h.record(100).unwrap();
        let svg = latency_svg("S3", &[("a", &h), ("b", &h)]);
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<polyline").count(), 2);
    }
}
