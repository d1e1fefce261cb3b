//! Reports of a `lasso-bench` run: the plain-text table printed at the end (req/s, p50/p99/p99.9, errors and ratios
//! to the mock provider and to nginx for every target), `report.md` (the same table plus details), `report.html`
//! (inline SVG: latency-vs-throughput curves, latency histograms, per-second failover series; no JavaScript) and
//! `results.json` (everything, including histograms).

use std::fmt::Write as _;

use crate::bench::{BenchReport, Row};
use crate::hist::fmt_ms;
use crate::scenario::StepKind;

fn reference<'a>(rows: &'a [Row], r: &Row, target: &str) -> Option<&'a Row> {
    rows.iter().find(|x| {
        x.scenario == r.scenario && x.step == r.step && x.target == target && x.result.is_some()
    })
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

/// Ratio cells (rps, p50, p99) of `r` against the row of `target` in the same step.
fn ratios(rows: &[Row], r: &Row, target: &str) -> [String; 3] {
    let Some(x) = &r.result else {
        return ["-".into(), "-".into(), "-".into()];
    };
    let Some(base) = reference(rows, r, target).and_then(|b| b.result.as_ref()) else {
        return ["-".into(), "-".into(), "-".into()];
    };
    [
        ratio(Some(x.ok_rps), Some(base.ok_rps)),
        ratio(
            Some(x.latency.p50_us as f64),
            Some(base.latency.p50_us as f64),
        ),
        ratio(
            Some(x.latency.p99_us as f64),
            Some(base.latency.p99_us as f64),
        ),
    ]
}

fn note(r: &Row) -> String {
    let mut parts = Vec::new();
    if let Some(rate) = r.rate {
        parts.push(format!("rate {rate:.0}/s"));
    }
    if let Some(x) = &r.result {
        if let Some(n) = &x.notifications {
            parts.push(format!(
                "{} subs, {} notifs, gaps {}, out-of-order {}",
                n.subscribed, n.received, n.gaps, n.out_of_order
            ));
        }
        if x.batch > 1 {
            parts.push(format!("{:.0} calls/s", x.calls_per_s));
        }
        if x.bytes_received > 0
            && x.duration_s > 0.0
            && x.bytes_received as f64 / x.duration_s > 50e6
        {
            parts.push(format!(
                "{:.0} MB/s",
                x.bytes_received as f64 / x.duration_s / 1e6
            ));
        }
    }
    if let Some(soak) = &r.soak {
        parts.push(soak.summary());
    } else if let Some(e) = r.idle_established {
        parts.push(format!("{e} idle conns"));
    }
    if let (None, Some(a), Some(b)) = (&r.soak, r.rss_before_kib, r.rss_during_kib) {
        parts.push(format!(
            "RSS {:.1} -> {:.1} MiB",
            a as f64 / 1024.0,
            b as f64 / 1024.0
        ));
    }
    if r.rounds.len() > 1 {
        let v: Vec<String> = r
            .rounds
            .iter()
            .map(|x| format!("{:.0}", x.ok_rps))
            .collect();
        parts.push(format!("rounds req/s {}", v.join("/")));
    }
    if !r.note.is_empty() {
        parts.push(r.note.clone());
    }
    parts.join("; ")
}

const HEADERS: [&str; 17] = [
    "step",
    "target",
    "req/s",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    "err %",
    "cpu %",
    "req/cpu-s",
    "rps/mock",
    "p50/mock",
    "p99/mock",
    "rps/nginx",
    "p50/nginx",
    "p99/nginx",
    "rps/floor",
    "notes",
];

fn cells(rows: &[Row], r: &Row) -> Vec<String> {
    let step = format!("{}/{}", r.scenario, r.step);
    match &r.result {
        None => {
            let mut v = vec![step, r.target.clone()];
            v.extend(std::iter::repeat_n("-".to_string(), HEADERS.len() - 3));
            v.push(note(r));
            v
        }
        Some(x) => {
            let m = ratios(rows, r, "mock");
            let n = ratios(rows, r, "nginx");
            let [floor_rps, _, _] = ratios(rows, r, "floor");
            let mut v = vec![
                step,
                r.target.clone(),
                format!("{:.0}", x.ok_rps),
                fmt_ms(x.latency.p50_us),
                fmt_ms(x.latency.p99_us),
                fmt_ms(x.latency.p999_us),
                format!("{:.2}", x.error_rate() * 100.0),
                r.target_cpu_util
                    .map(|c| format!("{:.0}", c * 100.0))
                    .unwrap_or_else(|| "-".into()),
                match r.target_cpu_util {
                    Some(c) if c > 0.02 => format!("{:.0}", x.ok_rps / c),
                    _ => "-".into(),
                },
            ];
            v.extend(m);
            v.extend(n);
            v.push(floor_rps);
            v.push(note(r));
            v
        }
    }
}

/// The plain-text table (printed at the end of a run).
pub fn text_table(rep: &BenchReport) -> String {
    let mut grid: Vec<Vec<String>> = vec![HEADERS.iter().map(|s| s.to_string()).collect()];
    for r in &rep.rows {
        grid.push(cells(&rep.rows, r));
    }
    let ncol = HEADERS.len();
    let widths: Vec<usize> = (0..ncol)
        .map(|c| {
            grid.iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    for (i, row) in grid.iter().enumerate() {
        let mut line = String::new();
        for c in 0..ncol {
            let w = widths[c];
            let cell = &row[c];
            if c < 2 || c == ncol - 1 {
                let _ = write!(line, "{cell:<w$}  ");
            } else {
                let _ = write!(line, "{cell:>w$}  ");
            }
        }
        s.push_str(line.trim_end());
        s.push('\n');
        if i == 0 {
            s.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (ncol - 1)));
            s.push('\n');
        }
    }
    s
}

/// The phase table of every soak row (empty when the run had none).
pub fn soak_text(rep: &BenchReport) -> String {
    let mut s = String::new();
    for r in &rep.rows {
        if let Some(soak) = &r.soak {
            let _ = writeln!(
                s,
                "Soak {}/{} — {} (RSS = VmRSS of the target process):\n{}",
                r.scenario,
                r.step,
                r.target,
                soak.table()
            );
        }
    }
    s
}

/// Header lines: machine, placement, versions, skipped targets.
pub fn preamble(rep: &BenchReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Machine:   {}", rep.machine);
    let _ = writeln!(s, "Placement: {}", rep.placement);
    for (k, v) in &rep.versions {
        let _ = writeln!(s, "{:<10} {}", format!("{k}:"), v);
    }
    for (k, why) in &rep.skipped {
        let _ = writeln!(s, "{:<10} SKIPPED: {}", format!("{k}:"), why);
    }
    if let Some(b) = rep.busy_before {
        let _ = writeln!(
            s,
            "Load:      {:.0}% of the CPUs busy with other work just before the run",
            b * 100.0
        );
    }
    let _ = writeln!(s, "Command:   {}", rep.command);
    let _ = writeln!(
        s,
        "Started:   {}   wall time {:.0} s",
        rep.started_utc, rep.total_wall_s
    );
    s
}

/// `report.md`.
pub fn markdown(rep: &BenchReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Lasso load test: {}\n",
        rep.scenarios
            .iter()
            .map(|x| x.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(s, "- Machine: {}", rep.machine);
    let _ = writeln!(s, "- Placement: {}", rep.placement);
    for (k, v) in &rep.versions {
        let _ = writeln!(s, "- {k}: {v}");
    }
    for (k, why) in &rep.skipped {
        let _ = writeln!(s, "- **{k} skipped**: {why}");
    }
    if let Some(b) = rep.busy_before {
        let _ = writeln!(
            s,
            "- Load: {:.0}% of the CPUs busy with other work just before the run",
            b * 100.0
        );
    }
    let _ = writeln!(s, "- Command: `{}`", rep.command);
    let _ = writeln!(
        s,
        "- Started {} (UTC), wall time {:.0} s\n",
        rep.started_utc, rep.total_wall_s
    );
    let _ = writeln!(
        s,
        "req/s = answered without error per second; latencies from the intended send time (open loop: coordinated omission \
         corrected); cpu % = CPU time of the target process(es) over the run's wall time; req/cpu-s = req/s divided by \
         that (throughput per fully used core, less sensitive to noise from other processes); ratios are to the mock provider \
         (the limit), to nginx and to the floor forwarder (the runtime's limit for a proxy) in the same step (rps > 1 = more \
         throughput; p50/p99 < 1 = faster).\n"
    );
    let _ = writeln!(s, "| {} |", HEADERS.join(" | "));
    let _ = writeln!(
        s,
        "|{}",
        HEADERS
            .iter()
            .enumerate()
            .map(|(i, _)| if i < 2 || i == HEADERS.len() - 1 {
                "---|"
            } else {
                "---:|"
            })
            .collect::<String>()
    );
    for r in &rep.rows {
        let _ = writeln!(
            s,
            "| {} |",
            cells(&rep.rows, r).join(" | ").replace('\n', " ")
        );
    }
    let soak = soak_text(rep);
    if !soak.is_empty() {
        let _ = writeln!(s, "\n## Soak\n\n```\n{soak}```");
    }
    let _ = writeln!(s, "\n## Scenarios\n");
    for sc in &rep.scenarios {
        let _ = writeln!(
            s,
            "- **{}** ({} worker(s), {} upstream provider(s), {:.0} s): {}",
            sc.name, sc.workers, sc.providers, sc.wall_s, sc.description
        );
    }
    let _ = writeln!(s, "\n## Details\n");
    for r in &rep.rows {
        if let Some(x) = &r.result {
            let _ = writeln!(
                s,
                "### {}/{} — {}\n\n```\n{}```",
                r.scenario,
                r.step,
                r.target,
                x.human()
            );
            if !r.events.is_empty() {
                let _ = writeln!(
                    s,
                    "Events: {}\n",
                    r.events
                        .iter()
                        .map(|(t, l)| format!("t={t:.0}s {l}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                );
            }
            if r.events.is_empty() {
                continue;
            }
            let _ = writeln!(
                s,
                "| t (s) | ok | errors | p50 ms | p99 ms |\n|---:|---:|---:|---:|---:|"
            );
            for p in &x.series {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} |",
                    p.t,
                    p.ok,
                    p.errors,
                    fmt_ms(p.p50_us),
                    fmt_ms(p.p99_us)
                );
            }
            s.push('\n');
        }
    }
    s
}

fn color(target: &str) -> &'static str {
    match target {
        "mock" => "#7f7f7f",
        "lasso" => "#d62728",
        "nginx" => "#1f77b4",
        "floor" => "#ff7f0e",
        "blutgang" => "#2ca02c",
        _ => "#9467bd",
    }
}

/// One plotted line.
pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn nice_ticks(lo: f64, hi: f64, log: bool) -> Vec<f64> {
    if log {
        let mut v = Vec::new();
        let mut d = 10f64.powf(lo.log10().floor());
        while d <= hi * 1.0001 {
            for m in [1.0, 2.0, 5.0] {
                let x = d * m;
                if x >= lo * 0.9999 && x <= hi * 1.0001 {
                    v.push(x);
                }
            }
            d *= 10.0;
        }
        v
    } else {
        let span = (hi - lo).max(1e-12);
        let raw = span / 5.0;
        let mag = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0]
            .iter()
            .map(|m| m * mag)
            .find(|s| span / s <= 6.0)
            .unwrap_or(mag * 10.0);
        let mut v = Vec::new();
        let mut x = (lo / step).ceil() * step;
        while x <= hi + step * 1e-9 {
            v.push(x);
            x += step;
        }
        v
    }
}

fn fmt_tick(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if x.abs() >= 1e6 {
        format!("{:.0}M", x / 1e6)
    } else if x.abs() >= 1e4 {
        format!("{:.0}k", x / 1e3)
    } else if x.abs() >= 1.0 {
        format!("{x:.0}")
    } else if x.abs() >= 0.1 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// An inline SVG line chart.
pub fn line_chart(
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[Series],
    log_x: bool,
    log_y: bool,
    marks: &[(f64, String)],
) -> String {
    let (w, h) = (760.0, 340.0);
    let (ml, mr, mt, mb) = (70.0, 150.0, 34.0, 46.0);
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(x, y)| {
            x.is_finite() && y.is_finite() && (!log_x || *x > 0.0) && (!log_y || *y > 0.0)
        })
        .collect();
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"11\">"
    );
    let _ = write!(
        s,
        "<rect width=\"{w}\" height=\"{h}\" fill=\"white\"/><text x=\"{ml}\" y=\"20\" font-size=\"13\" font-weight=\"bold\">{}</text>",
        esc(title)
    );
    if pts.is_empty() {
        s.push_str("<text x=\"80\" y=\"120\">no data</text></svg>");
        return s;
    }
    let fx = |v: f64| if log_x { v.log10() } else { v };
    let fy = |v: f64| if log_y { v.log10() } else { v };
    let (mut x0, mut x1) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (mut y0, mut y1) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    for (mx, _) in marks {
        x0 = x0.min(*mx);
        x1 = x1.max(*mx);
    }
    if !log_y {
        y0 = y0.min(0.0);
    }
    if !log_x && x0 > 0.0 && x0 < (x1 - x0) {
        x0 = 0.0;
    }
    if log_x {
        x0 = 10f64.powf(x0.log10().floor());
        x1 = 10f64.powf(x1.log10().ceil());
    }
    if log_y {
        y0 = 10f64.powf(y0.log10().floor());
        y1 = 10f64.powf(y1.log10().ceil());
    } else {
        y1 *= 1.08;
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    let pw = w - ml - mr;
    let ph = h - mt - mb;
    let px = |v: f64| ml + (fx(v) - fx(x0)) / (fx(x1) - fx(x0)) * pw;
    let py = |v: f64| mt + ph - (fy(v) - fy(y0)) / (fy(y1) - fy(y0)) * ph;
    let _ = write!(
        s,
        "<rect x=\"{ml}\" y=\"{mt}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#999\"/>"
    );
    for t in nice_ticks(x0, x1, log_x) {
        let x = px(t);
        let _ = write!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{mt}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            mt + ph,
            mt + ph + 14.0,
            fmt_tick(t)
        );
    }
    for t in nice_ticks(y0, y1, log_y) {
        let y = py(t);
        let _ = write!(
            s,
            "<line x1=\"{ml}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            ml + pw,
            ml - 5.0,
            y + 4.0,
            fmt_tick(t)
        );
    }
    let _ = write!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
        ml + pw / 2.0,
        h - 8.0,
        esc(xlabel)
    );
    let _ = write!(
        s,
        "<text transform=\"translate(16,{:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        mt + ph / 2.0,
        esc(ylabel)
    );
    for (mx, label) in marks {
        let x = px(*mx);
        let _ = write!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{mt}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#000\" stroke-dasharray=\"2,3\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{}</text>",
            mt + ph,
            x + 3.0,
            mt + 12.0,
            esc(label)
        );
    }
    for (i, se) in series.iter().enumerate() {
        let p: Vec<String> = se
            .points
            .iter()
            .filter(|(x, y)| {
                x.is_finite() && y.is_finite() && (!log_x || *x > 0.0) && (!log_y || *y > 0.0)
            })
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        if p.is_empty() {
            continue;
        }
        let dash = if se.dashed {
            " stroke-dasharray=\"6,4\""
        } else {
            ""
        };
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
            se.color,
            p.join(" ")
        );
        if p.len() <= 12 {
            for q in &p {
                let (a, b) = q.split_once(',').unwrap_or(("0", "0"));
                let _ = write!(
                    s,
                    "<circle cx=\"{a}\" cy=\"{b}\" r=\"3\" fill=\"{}\"/>",
                    se.color
                );
            }
        }
        let ly = mt + 10.0 + i as f64 * 16.0;
        let lx = ml + pw + 12.0;
        let _ = write!(
            s,
            "<line x1=\"{lx}\" y1=\"{ly}\" x2=\"{:.1}\" y2=\"{ly}\" stroke=\"{}\" stroke-width=\"2\"{dash}/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            lx + 22.0,
            se.color,
            lx + 26.0,
            ly + 4.0,
            esc(&se.name)
        );
    }
    s.push_str("</svg>");
    s
}

/// `report.html`: tables and inline SVG plots, no scripts.
pub fn html(rep: &BenchReport) -> String {
    let mut s = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Lasso load test</title><style>\
         body{font-family:sans-serif;margin:24px;max-width:1400px}table{border-collapse:collapse;font-size:12px}\
         td,th{border:1px solid #ccc;padding:3px 6px}td.n{text-align:right}th{background:#f3f3f3}\
         pre{background:#f7f7f7;padding:8px;font-size:12px}h2{margin-top:32px}</style></head><body>",
    );
    let _ = write!(
        s,
        "<h1>Lasso load test: {}</h1><pre>{}</pre>",
        esc(&rep
            .scenarios
            .iter()
            .map(|x| x.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")),
        esc(&preamble(rep))
    );
    s.push_str("<table><tr>");
    for h in HEADERS {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s.push_str("</tr>");
    for r in &rep.rows {
        s.push_str("<tr>");
        for (i, c) in cells(&rep.rows, r).iter().enumerate() {
            let class = if i >= 2 && i < HEADERS.len() - 1 {
                " class=\"n\""
            } else {
                ""
            };
            let style = if i == 1 {
                format!(" style=\"color:{}\"", color(&r.target))
            } else {
                String::new()
            };
            let _ = write!(s, "<td{class}{style}>{}</td>", esc(c));
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
    for sc in &rep.scenarios {
        let rows: Vec<&Row> = rep.rows.iter().filter(|r| r.scenario == sc.name).collect();
        let _ = write!(
            s,
            "<h2>{}</h2><p>{} ({} worker(s), {} provider(s), {:.0} s)</p>",
            esc(&sc.name),
            esc(&sc.description),
            sc.workers,
            sc.providers,
            sc.wall_s
        );
        let mut targets: Vec<String> = rows.iter().map(|r| r.target.clone()).collect();
        targets.dedup();
        targets.sort_by_key(|t| {
            ["mock", "lasso", "floor", "nginx", "blutgang"]
                .iter()
                .position(|x| x == t)
                .unwrap_or(9)
        });
        targets.dedup();
        // Latency vs throughput over the request steps of the scenario (closed-loop max and open-loop points).
        let lt: Vec<&&Row> = rows
            .iter()
            .filter(|r| matches!(r.kind, StepKind::Closed | StepKind::Open) && r.result.is_some())
            .collect();
        // Only meaningful with a closed-loop max and open-loop rates of the same scenario (e.g. quick, fixed-rate).
        let has_open = lt.iter().any(|r| r.kind == StepKind::Open);
        let has_closed = lt.iter().any(|r| r.kind == StepKind::Closed);
        if has_open && has_closed && lt.len() > targets.len() {
            let mut series = Vec::new();
            for t in &targets {
                for (pct, dashed) in [("p50", true), ("p99", false)] {
                    let mut pts: Vec<(f64, f64)> = lt
                        .iter()
                        .filter(|r| &r.target == t)
                        .filter_map(|r| {
                            let x = r.result.as_ref()?;
                            let us = if pct == "p50" {
                                x.latency.p50_us
                            } else {
                                x.latency.p99_us
                            };
                            Some((x.ok_rps, us as f64 / 1000.0))
                        })
                        .collect();
                    pts.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
                    series.push(Series {
                        name: format!("{t} {pct}"),
                        color: color(t),
                        points: pts,
                        dashed,
                    });
                }
            }
            s.push_str(&line_chart(
                &format!("{}: latency vs throughput", sc.name),
                "throughput (req/s answered)",
                "latency (ms, log)",
                &series,
                false,
                true,
                &[],
            ));
        }
        for step in rows
            .iter()
            .map(|r| r.step.clone())
            .collect::<std::collections::BTreeSet<_>>()
        {
            let srows: Vec<&&Row> = rows
                .iter()
                .filter(|r| r.step == step && r.result.is_some())
                .collect();
            if srows.is_empty() {
                continue;
            }
            // Histogram: share of answers per log-spaced latency bucket.
            let series: Vec<Series> = srows
                .iter()
                .map(|r| {
                    let x = r.result.as_ref().expect("filtered");
                    let total: u64 = x.histogram.iter().map(|b| b.count).sum::<u64>().max(1);
                    Series {
                        name: r.target.clone(),
                        color: color(&r.target),
                        points: x
                            .histogram
                            .iter()
                            .map(|b| {
                                (
                                    ((b.lo_us.max(1) as f64) * (b.hi_us as f64)).sqrt() / 1000.0,
                                    b.count as f64 * 100.0 / total as f64,
                                )
                            })
                            .collect(),
                        dashed: false,
                    }
                })
                .collect();
            s.push_str(&line_chart(
                &format!("{}/{}: latency distribution", sc.name, step),
                "latency (ms, log)",
                "% of answers per bucket",
                &series,
                true,
                false,
                &[],
            ));
            let with_events: Vec<&&&Row> = srows.iter().filter(|r| !r.events.is_empty()).collect();
            if !with_events.is_empty() {
                let marks: Vec<(f64, String)> = with_events[0].events.clone();
                let err: Vec<Series> = srows
                    .iter()
                    .map(|r| Series {
                        name: r.target.clone(),
                        color: color(&r.target),
                        points: r
                            .result
                            .as_ref()
                            .map(|x| {
                                x.series
                                    .iter()
                                    .map(|p| (p.t as f64, p.errors as f64))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        dashed: false,
                    })
                    .collect();
                s.push_str(&line_chart(
                    &format!("{}/{}: errors per second", sc.name, step),
                    "time (s)",
                    "errors / s",
                    &err,
                    false,
                    false,
                    &marks,
                ));
                let p99: Vec<Series> = srows
                    .iter()
                    .map(|r| Series {
                        name: r.target.clone(),
                        color: color(&r.target),
                        points: r
                            .result
                            .as_ref()
                            .map(|x| {
                                x.series
                                    .iter()
                                    .filter(|p| p.p99_us > 0)
                                    .map(|p| (p.t as f64, p.p99_us as f64 / 1000.0))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        dashed: false,
                    })
                    .collect();
                s.push_str(&line_chart(
                    &format!("{}/{}: p99 latency per second", sc.name, step),
                    "time (s)",
                    "p99 (ms, log)",
                    &p99,
                    false,
                    true,
                    &marks,
                ));
            }
        }
    }
    s.push_str("<h2>Details</h2>");
    for r in &rep.rows {
        if let Some(x) = &r.result {
            let _ = write!(
                s,
                "<h3>{}/{} — {}</h3><pre>{}</pre>",
                esc(&r.scenario),
                esc(&r.step),
                esc(&r.target),
                esc(&x.human())
            );
        }
    }
    s.push_str("</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_handles_empty_and_log_axes() {
        assert!(line_chart("t", "x", "y", &[], false, false, &[]).contains("no data"));
        let s = Series {
            name: "a".into(),
            color: "#000",
            points: vec![(1.0, 0.5), (10.0, 5.0), (100.0, 50.0)],
            dashed: true,
        };
        let svg = line_chart("t", "x", "y", &[s], true, true, &[(5.0, "mark".into())]);
        assert!(
            svg.starts_with("<svg")
                && svg.ends_with("</svg>")
                && svg.contains("polyline")
                && svg.contains("mark")
        );
    }

    #[test]
    fn ticks() {
        assert_eq!(
            nice_ticks(0.0, 10.0, false),
            vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
        );
        assert_eq!(
            nice_ticks(1.0, 100.0, true),
            vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
        );
    }
}
