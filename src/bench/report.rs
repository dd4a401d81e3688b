//! Output: progress lines on stderr while a run goes, a summary table at
//! the end, and with `--json` one JSON object on stdout (the table then
//! goes to stderr).

use std::collections::BTreeMap;
use std::io::IsTerminal;

use anyhow::Result;
use serde_json::{json, Value};

use super::engine::{RoomKind, StepResult};
use super::erase;
use super::fanout::TargetReport;
use super::stats::median;
use super::BenchArgs;

/// A progress line (stderr).
pub fn progress(line: &str) {
    if std::io::stderr().is_terminal() {
        eprintln!("\x1b[2m{line}\x1b[0m");
    } else {
        eprintln!("{line}");
    }
}

/// A plain text table with right-aligned columns.
pub struct Table {
    head: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(head: &[&str]) -> Table {
        Table {
            head: head.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let n = self.head.len();
        let mut w = vec![0; n];
        for r in std::iter::once(&self.head).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(n) {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let line = |r: &Vec<String>| {
            r.iter()
                .enumerate()
                .map(|(i, c)| {
                    if i == 0 {
                        format!("{c:<width$}", width = w[i])
                    } else {
                        format!("{c:>width$}", width = w[i])
                    }
                })
                .collect::<Vec<_>>()
                .join("  ")
        };
        let mut out = line(&self.head);
        out.push('\n');
        out.push_str(&"-".repeat(w.iter().sum::<usize>() + 2 * (n - 1)));
        out.push('\n');
        for r in &self.rows {
            out.push_str(&line(r));
            out.push('\n');
        }
        out
    }
}

pub fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.digits$}"))
}

/// Prints `text` (the human summary) and, with `--json`, `value`.
pub fn emit(args: &BenchArgs, text: &str, value: &Value) -> Result<()> {
    if args.json {
        eprint!("{text}");
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{text}");
    }
    Ok(())
}

fn step_table(steps: &[StepResult]) -> Table {
    let mut t = Table::new(&[
        "step",
        "sent/s",
        "deliv/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "ack p50",
        "ack p99",
        "lost",
        "dup",
        "srv CPU%",
        "srv RSS MiB",
        "bench CPU%",
    ]);
    for s in steps {
        t.row(vec![
            s.label.clone(),
            format!("{:.0}", s.send_rate),
            format!("{:.0}", s.delivery_rate),
            ms(s.latency.p50_ms),
            ms(s.latency.p90_ms),
            ms(s.latency.p99_ms),
            ms(s.latency.p999_ms),
            ms(s.latency.max_ms),
            ms(s.ack.p50_ms),
            ms(s.ack.p99_ms),
            s.lost.to_string(),
            s.duplicates.to_string(),
            opt(s.server_cpu_percent, 0),
            opt(s.server_rss_mib, 1),
            opt(s.bench_cpu_percent, 0),
        ]);
    }
    t
}

/// Medians over repeated steps of the same target rate.
pub fn medians(steps: &[StepResult]) -> Vec<Value> {
    let mut by_rate: BTreeMap<u64, Vec<&StepResult>> = BTreeMap::new();
    for s in steps {
        by_rate.entry(s.target_rate as u64).or_default().push(s);
    }
    by_rate
        .into_iter()
        .map(|(rate, v)| {
            let m = |f: &dyn Fn(&StepResult) -> f64| {
                median(&v.iter().map(|s| f(s)).collect::<Vec<_>>())
            };
            json!({
                "target_rate": rate,
                "runs": v.len(),
                "delivery_rate": m(&|s| s.delivery_rate),
                "p50_ms": m(&|s| s.latency.p50_ms),
                "p99_ms": m(&|s| s.latency.p99_ms),
                "p999_ms": m(&|s| s.latency.p999_ms),
                "ack_p50_ms": m(&|s| s.ack.p50_ms),
                "ack_p99_ms": m(&|s| s.ack.p99_ms),
                "server_cpu_percent": m(&|s| s.server_cpu_percent.unwrap_or(f64::NAN)),
                "lost": v.iter().map(|s| s.lost).sum::<u64>(),
                "duplicates": v.iter().map(|s| s.duplicates).sum::<u64>(),
            })
        })
        .collect()
}

/// The fanout summary: a table per server, medians of repeats, the
/// highest rate held and the ratio to the baseline.
pub fn fanout(args: &BenchArgs, reports: &[TargetReport]) -> Result<()> {
    let mut text = String::new();
    let mut out = Vec::new();
    for r in reports {
        let rooms = match r.room_kind {
            RoomKind::Group => format!("group rooms of {}", args.room_size),
            RoomKind::PatientChat => format!(
                "patient chats of {} (a workspace each, a chat.post audit record per message)",
                args.room_size
            ),
        };
        text.push_str(&format!(
            "\n{} — {} users, {rooms}, {} B messages, {}\n",
            r.server,
            args.clients,
            args.payload,
            if args.closed_loop {
                format!("closed loop (window {})", args.window)
            } else {
                "open loop".to_string()
            }
        ));
        text.push_str(&step_table(&r.steps).render());
        let meds = medians(&r.steps);
        if args.repeat > 1 {
            text.push_str("medians:\n");
            for m in &meds {
                text.push_str(&format!(
                    "  {} msg/s × {}: {:.0} deliveries/s, p50 {} ms, p99 {} ms, ack p99 {} ms\n",
                    m["target_rate"],
                    m["runs"],
                    m["delivery_rate"].as_f64().unwrap_or(0.0),
                    ms(m["p50_ms"].as_f64().unwrap_or(0.0)),
                    ms(m["p99_ms"].as_f64().unwrap_or(0.0)),
                    ms(m["ack_p99_ms"].as_f64().unwrap_or(0.0)),
                ));
            }
        }
        if let Some(why) = &r.erase_skipped {
            text.push_str(&format!("erase during steps: skipped ({why})\n"));
        }
        let erase_meds = erase::medians(&r.erase_during);
        if let (Some(n), Some(_)) = (args.erase_during, r.erase_during.first()) {
            text.push_str(&format!(
                "each step again, erasing a patient with {n} messages as it starts (latency ms):\n"
            ));
            text.push_str(&erase::table(&r.erase_during).render());
            if args.repeat > 1 {
                text.push_str("medians:\n");
                for m in &erase_meds {
                    text.push_str(&format!(
                        "  {} msg/s × {}: p99 {} → {} ms ({:+.2}), erase {} ms\n",
                        m["target_rate"],
                        m["runs"],
                        ms(m["plain_p99_ms"].as_f64().unwrap_or(0.0)),
                        ms(m["during_p99_ms"].as_f64().unwrap_or(0.0)),
                        m["p99_delta_ms"].as_f64().unwrap_or(0.0),
                        ms(m["erase_ms"].as_f64().unwrap_or(0.0)),
                    ));
                }
            }
        }
        if args.find_max {
            text.push_str(&format!(
                "highest rate held with p99 ≤ {} ms: {} msg/s = {} deliveries/s (stopped: {})\n",
                args.max_p99_ms,
                opt(r.max_rate, 0),
                opt(r.max_delivery_rate, 0),
                r.stopped_because.as_deref().unwrap_or("-"),
            ));
        }
        text.push_str(&format!(
            "lost {}, duplicated {}, sockets dropped {}{}\n",
            r.lost_total,
            r.duplicates_total,
            r.dropped_connections,
            r.drop_reason
                .as_ref()
                .map(|w| format!(" (first: {w})"))
                .unwrap_or_default()
        ));
        let mut v = serde_json::to_value(r)?;
        v["medians"] = json!(meds);
        if args.erase_during.is_some() {
            v["erase_medians"] = json!(erase_meds);
        }
        out.push(v);
    }
    let mut value = json!({"mode": "fanout", "runs": out});
    if let [a, b] = reports {
        if let (Some(x), Some(y)) = (a.max_delivery_rate, b.max_delivery_rate) {
            let ratio = x / y;
            text.push_str(&format!(
                "\n{} holds {:.0} % of the baseline's ceiling ({:.0} vs {:.0} deliveries/s)\n",
                a.server,
                100.0 * ratio,
                x,
                y
            ));
            value["ratio_to_baseline"] = json!(ratio);
        }
    }
    emit(args, &text, &value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["step", "p99 ms"]);
        t.row(vec!["1000/s".into(), ms(1.234)]);
        t.row(vec!["a long label".into(), ms(123.4)]);
        let r = t.render();
        let lines: Vec<&str> = r.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{r}");
        assert!(
            lines[2].ends_with("1.23") && lines[3].ends_with("123"),
            "{r}"
        );
    }
}
