//! The plot of `hvflush-vmm bench` (`--svg`): flush-hypercall latency
//! against running targets, drawn with plotters from the bench's JSON
//! results (the value written to `--output`), so that it can be redrawn
//! from a committed JSON file without running guests (`--plot-from`).
//!
//! The SVG backend writes text as `<text>` elements and plotters' built-in
//! (feature-less) font only estimates text sizes for the layout, so
//! rendering needs no font files; the viewer draws the text.

use std::path::Path;

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;

/// Size of the picture in pixels.
const SIZE: (u32, u32) = (960, 580);
const FLUSH: RGBColor = RGBColor(0xc0, 0x00, 0x33);
const TRAP: RGBColor = RGBColor(0x33, 0x66, 0xcc);
const NON_FLUSH: RGBColor = RGBColor(0x1b, 0x8a, 0x3c);
const NON_FLUSH_OFF: RGBColor = RGBColor(0x80, 0x80, 0x80);
const OVERCOMMIT_FILL: RGBColor = RGBColor(0xfd, 0xed, 0xd8);
const OVERCOMMIT_TEXT: RGBColor = RGBColor(0xa0, 0x4a, 0x00);
const FONT: &str = "sans-serif";

/// One running-targets row of the results, latencies in µs.
struct Row {
    targets: f64,
    /// vCPU threads of that VM run: the caller (vCPU 0) and the targets,
    /// as `bench` runs it (`targets + 1` vCPUs).
    threads: u64,
    flush_us: f64,
    trap_us: f64,
}

/// Everything the plot shows, read from the results.
struct Data {
    rows: Vec<Row>,
    host_cpus: u64,
    /// Trap stub of the idle-target run with the flush hooks on / off.
    hooks_on_us: Option<f64>,
    hooks_off_us: Option<f64>,
    hooks_ratio: Option<f64>,
}

fn positive(v: &Value) -> Option<f64> {
    v.as_f64().filter(|x| x.is_finite() && *x > 0.0)
}

fn data(results: &Value) -> Result<Data, String> {
    let mut rows = Vec::new();
    for row in results["running_targets"].as_array().into_iter().flatten() {
        let targets = row["running_targets"]
            .as_u64()
            .filter(|&t| t > 0)
            .ok_or("a running_targets row has no positive running_targets")?;
        let ns = |key: &str| {
            positive(&row[key]).ok_or(format!(
                "the row of {targets} running targets has no positive {key}"
            ))
        };
        rows.push(Row {
            targets: targets as f64,
            threads: targets + 1,
            flush_us: ns("hypercall_ns")? / 1000.0,
            trap_us: ns("trap_ns")? / 1000.0,
        });
    }
    if rows.is_empty() {
        return Err("the results have no running_targets rows to plot".into());
    }
    rows.sort_by(|a, b| a.targets.total_cmp(&b.targets));
    rows.dedup_by(|a, b| a.targets == b.targets);
    let exits = &results["non_flush_exits"];
    Ok(Data {
        rows,
        host_cpus: results["host"]["cpus"].as_u64().unwrap_or(0),
        hooks_on_us: positive(&exits["trap_hooks_on_ns"]).map(|ns| ns / 1000.0),
        hooks_off_us: positive(&exits["trap_hooks_off_ns"]).map(|ns| ns / 1000.0),
        hooks_ratio: positive(&exits["ratio_hooks_on_vs_off"]),
    })
}

/// A latency in µs as a short readable label: `47 µs`, `3.9 ms`, `1 s`.
fn duration_label(us: f64) -> String {
    let (value, unit) = if us >= 1e6 {
        (us / 1e6, "s")
    } else if us >= 1e3 {
        (us / 1e3, "ms")
    } else {
        (us, "µs")
    };
    if value >= 10.0 || value == value.round() {
        format!("{value:.0} {unit}")
    } else {
        format!("{value:.1} {unit}")
    }
}

/// The SVG plot of the bench results (`results` as written to `--output`).
pub fn latency_svg(results: &Value) -> Result<String, String> {
    let data = data(results)?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw(&root, &data).map_err(|e| format!("cannot draw the plot: {e}"))?;
        root.present()
            .map_err(|e| format!("cannot draw the plot: {e}"))?;
    }
    Ok(svg)
}

/// `bench --plot-from JSON --svg SVG`: redraw the plot from saved results.
pub fn plot_from(json: &Path, svg: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(json)
        .map_err(|e| format!("cannot read {}: {e}", json.display()))?;
    let results: Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", json.display()))?;
    let plot = latency_svg(&results).map_err(|e| format!("{}: {e}", json.display()))?;
    std::fs::write(svg, plot).map_err(|e| format!("cannot write {}: {e}", svg.display()))
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type DrawResult<T> = Result<T, DrawingAreaErrorKind<std::io::Error>>;

fn draw(root: &Area<'_>, d: &Data) -> DrawResult<()> {
    root.fill(&WHITE)?;

    // Log x over the measured target counts, a tick at each (see x_ticks).
    let (x_min, x_max) = (d.rows[0].targets, d.rows[d.rows.len() - 1].targets);
    let x_range = (x_min / 1.35)..(x_max * 1.35);
    let x_ticks = x_ticks(d);

    // Log y over whole decades, with at least a decade of head room above
    // the highest point for the legend.
    let values = d
        .rows
        .iter()
        .flat_map(|r| [r.flush_us, r.trap_us])
        .chain(d.hooks_on_us)
        .chain(d.hooks_off_us);
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let lo_exp = lo.log10().floor() as i32;
    let hi_exp = ((hi * 10.0).log10().ceil() as i32).max(lo_exp + 1);
    let decades: Vec<f64> = (lo_exp..=hi_exp).map(|e| 10f64.powi(e)).collect();
    let minor: Vec<f64> = decades
        .iter()
        .flat_map(|&dec| (1..10).map(move |m| dec * f64::from(m)))
        .filter(|&v| v <= 10f64.powi(hi_exp))
        .collect();
    let y_range = 10f64.powi(lo_exp)..10f64.powi(hi_exp);

    let area = root.titled(
        "Flush hypercall latency vs running targets (hvflush-vmm bench)",
        (FONT, 22),
    )?;
    let mut chart = ChartBuilder::on(&area)
        .margin(16)
        .margin_right(28)
        // Room for the vCPU-thread axis drawn above the plot.
        .margin_top(58)
        .set_label_area_size(LabelAreaPosition::Left, 96)
        .set_label_area_size(LabelAreaPosition::Bottom, 50)
        .build_cartesian_2d(
            x_range.clone().log_scale().with_key_points(x_ticks.clone()),
            y_range
                .clone()
                .log_scale()
                .with_key_points(decades)
                .with_light_points(minor),
        )?;

    // Where the run has more vCPU threads than the host has CPUs.
    let first_over = d
        .rows
        .iter()
        .position(|r| d.host_cpus > 0 && r.threads > d.host_cpus);
    if let Some(i) = first_over {
        let from = if i == 0 {
            x_range.start
        } else {
            (d.rows[i - 1].targets * d.rows[i].targets).sqrt()
        };
        chart.draw_series([Rectangle::new(
            [(from, y_range.start), (x_range.end, y_range.end)],
            OVERCOMMIT_FILL.filled(),
        )])?;
        chart
            .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())?
            .label("shaded: more vCPU threads than host CPUs, kicks wait for the scheduler")
            .legend(|(x, y)| {
                Rectangle::new([(x, y - 7), (x + 24, y + 7)], OVERCOMMIT_FILL.filled())
            });
    }

    chart
        .configure_mesh()
        .x_desc("running targets (vCPUs spinning in the guest, inside KVM_RUN)")
        .y_desc("latency per call (log scale)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| duration_label(*y))
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .x_label_offset(0)
        .y_label_offset(0)
        .bold_line_style(BLACK.mix(0.18))
        .light_line_style(BLACK.mix(0.06))
        .draw()?;

    // The non-flush exits: one idle-target run, so flat lines.
    let line = |y: f64| vec![(x_range.start, y), (x_range.end, y)];
    if let Some(on) = d.hooks_on_us {
        let ratio = d
            .hooks_ratio
            .map(|r| format!("; on/off {r:.3}"))
            .unwrap_or_default();
        chart
            .draw_series(LineSeries::new(line(on), NON_FLUSH.stroke_width(2)))?
            .label(format!(
                "non-flush exit, flush hooks on: {} (idle-target run{ratio})",
                precise_us(on)
            ))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 24, y)], NON_FLUSH.stroke_width(2)));
    }
    if let Some(off) = d.hooks_off_us {
        chart
            .draw_series(DashedLineSeries::new(
                line(off),
                6,
                4,
                NON_FLUSH_OFF.stroke_width(2),
            ))?
            .label(format!(
                "non-flush exit, flush hooks off: {} (idle-target run)",
                precise_us(off)
            ))
            .legend(|(x, y)| {
                DashedPathElement::new([(x, y), (x + 24, y)], 6, 4, NON_FLUSH_OFF.stroke_width(2))
            });
    }

    let trap: Vec<(f64, f64)> = d.rows.iter().map(|r| (r.targets, r.trap_us)).collect();
    chart
        .draw_series(DashedLineSeries::new(
            trap.clone(),
            7,
            4,
            TRAP.stroke_width(2),
        ))?
        .label("bare trap stub, same VM run as each flush point")
        .legend(|(x, y)| {
            EmptyElement::at((x, y))
                + DashedPathElement::new([(0, 0), (24, 0)], 7, 4, TRAP.stroke_width(2))
                + TriangleMarker::new((12, 0), 5, TRAP.filled())
        });
    chart.draw_series(
        trap.iter()
            .map(|&p| TriangleMarker::new(p, 5, TRAP.filled())),
    )?;

    let flush: Vec<(f64, f64)> = d.rows.iter().map(|r| (r.targets, r.flush_us)).collect();
    chart
        .draw_series(LineSeries::new(flush.clone(), FLUSH.stroke_width(2)))?
        .label("flush hypercall: HvFlushVirtualAddressList, 16 GVAs")
        .legend(|(x, y)| {
            EmptyElement::at((x, y))
                + PathElement::new([(0, 0), (24, 0)], FLUSH.stroke_width(2))
                + Circle::new((12, 0), 4, FLUSH.filled())
        });
    chart.draw_series(flush.iter().map(|&p| Circle::new(p, 4, FLUSH.filled())))?;
    // Each point's latency, less those that would run into the last one.
    let mut last_label: Option<(i32, i32)> = None;
    for &p in &flush {
        let (px, py) = chart.backend_coord(&p);
        if last_label.is_some_and(|(lx, ly)| px - lx < 52 && (py - ly).abs() < 18) {
            continue;
        }
        last_label = Some((px, py));
        chart.draw_series([EmptyElement::at(p)
            + Text::new(
                duration_label(p.1),
                (-8, -6),
                (FONT, 14)
                    .into_font()
                    .color(&FLUSH)
                    .pos(Pos::new(HPos::Right, VPos::Bottom)),
            )])?;
    }

    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .margin(10)
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.92))
        .border_style(BLACK.mix(0.4))
        .draw()?;

    // The top axis: vCPU threads of each run against the host's CPUs.
    let (xs, ys) = chart.plotting_area().get_pixel_range();
    let top = ys.start;
    for &t in &x_ticks {
        let threads = t as u64 + 1;
        let over = d.host_cpus > 0 && threads > d.host_cpus;
        let (px, _) = chart.backend_coord(&(t, y_range.end));
        root.draw(&PathElement::new([(px, top), (px, top - 5)], BLACK))?;
        root.draw(&Text::new(
            threads.to_string(),
            (px, top - 8),
            (FONT, 15)
                .into_font()
                .color(if over { &OVERCOMMIT_TEXT } else { &BLACK })
                .pos(Pos::new(HPos::Center, VPos::Bottom)),
        ))?;
    }
    let cpus = if d.host_cpus > 0 {
        format!(
            "vCPU threads in the VM run (caller + targets) on {} host CPUs",
            d.host_cpus
        )
    } else {
        "vCPU threads in the VM run (caller + targets)".to_string()
    };
    root.draw(&Text::new(
        cpus,
        ((xs.start + xs.end) / 2, top - 30),
        (FONT, 16)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Bottom)),
    ))?;
    Ok(())
}

/// `17.3 µs`: the non-flush-exit values differ by a few percent.
fn precise_us(us: f64) -> String {
    format!("{us:.1} µs")
}

/// The target counts to label on the x axis: all of them, less those that
/// would sit too close to the previous one on the log axis.
fn x_ticks(d: &Data) -> Vec<f64> {
    let mut ticks: Vec<f64> = Vec::new();
    for r in &d.rows {
        if ticks.last().is_none_or(|&t| (r.targets / t).log2() >= 0.3) {
            ticks.push(r.targets);
        }
    }
    ticks
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn synthetic() -> Value {
        let row = |k: u64, flush: f64, trap: f64| {
            json!({
                "running_targets": k,
                "hypercall_ns": flush,
                "trap_ns": trap,
                "kick_and_wait_ns": flush - trap,
                "ratio_vs_trap": flush / trap,
                "kicks_per_call": k as f64,
            })
        };
        json!({
            "host": { "cpus": 2 },
            "non_flush_exits": {
                "trap_hooks_off_ns": 17_000.0,
                "trap_hooks_on_ns": 17_100.0,
                "ratio_hooks_on_vs_off": 1.006,
                "target_ratio": 1.02,
            },
            "running_targets": [
                row(1, 31_000.0, 18_000.0),
                row(2, 3_600_000.0, 30_000.0),
                row(16, 37_000_000.0, 120_000.0),
            ],
        })
    }

    fn check(svg: &str) {
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
        assert!(svg.trim_end().ends_with("</svg>"));
        for label in [
            "flush hypercall: HvFlushVirtualAddressList",
            "bare trap stub, same VM run",
            "flush hooks on: ",
            "flush hooks off: ",
            "vCPU threads in the VM run (caller + targets) on 2 host CPUs",
            "shaded: more vCPU threads than host CPUs",
            "latency per call (log scale)",
            "running targets",
        ] {
            assert!(svg.contains(label), "no {label:?} in the plot");
        }
    }

    /// The text of every `<text>` element.
    fn texts(svg: &str) -> Vec<&str> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| t.split_once('>')?.1.split_once("</text>"))
            .map(|(text, _)| text.trim())
            .collect()
    }

    #[test]
    fn synthetic_results_plot_on_log_axes() {
        let svg = latency_svg(&synthetic()).unwrap();
        check(&svg);
        let texts = texts(&svg);
        // y: whole decades from 10 µs to 1 s (37 ms times the head room).
        for tick in ["10 µs", "100 µs", "1 ms", "10 ms", "100 ms", "1 s"] {
            assert!(texts.contains(&tick), "no y tick {tick:?} in {texts:?}");
        }
        // x: the measured target counts; top: their vCPU threads.
        for tick in ["1", "2", "16", "3", "17"] {
            assert!(texts.contains(&tick), "no tick {tick:?} in {texts:?}");
        }
        // The flush points are labelled with their latency.
        for point in ["31 µs", "3.6 ms", "37 ms"] {
            assert!(texts.contains(&point), "no point label {point:?}");
        }
        assert!(!texts.iter().any(|t| t.contains("40754")));
    }

    #[test]
    fn committed_bench_json_plots() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/bench.json");
        let results: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let svg = latency_svg(&results).unwrap();
        check(&svg);
        let texts = texts(&svg);
        let rows = results["running_targets"].as_array().unwrap();
        for row in rows {
            let k = row["running_targets"].as_u64().unwrap();
            assert!(texts.contains(&k.to_string().as_str()), "no x tick {k}");
        }
        assert!(texts.contains(&"1 ms"), "no 1 ms tick in {texts:?}");
    }

    #[test]
    fn duration_labels_are_short() {
        assert_eq!(duration_label(10.0), "10 µs");
        assert_eq!(duration_label(47.266), "47 µs");
        assert_eq!(duration_label(1000.0), "1 ms");
        assert_eq!(duration_label(3887.371), "3.9 ms");
        assert_eq!(duration_label(35179.885), "35 ms");
        assert_eq!(duration_label(1e6), "1 s");
    }

    #[test]
    fn results_without_rows_are_an_error() {
        assert!(latency_svg(&json!({ "running_targets": [] })).is_err());
        assert!(latency_svg(&json!({})).is_err());
    }
}
