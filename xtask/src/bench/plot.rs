//! The report's pictures, as SVG: grouped bar charts (median bar, min–max
//! whisker) and latency CDFs (round trip on a log axis).

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use super::stats::Stat;

/// One bar group: a category (system) and its bars (series name, figure).
pub struct Group {
    /// The category's label.
    pub label: String,
    /// Its bars; a missing figure leaves a gap.
    pub bars: Vec<Option<Stat>>,
}

fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> anyhow::Error + '_ {
    move |e| anyhow!("drawing {what}: {e}")
}

/// A grouped bar chart: one group per category, one bar per series.
pub fn bars(
    path: &Path,
    title: &str,
    y_label: &str,
    series: &[&str],
    groups: &[Group],
) -> Result<()> {
    let what = path.display().to_string();
    let root = SVGBackend::new(path, (960, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err(&what))?;
    let top = groups
        .iter()
        .flat_map(|g| g.bars.iter().flatten())
        .map(|s| s.max.max(s.median))
        .fold(0.0f64, f64::max);
    let top = if top > 0.0 { top * 1.15 } else { 1.0 };
    let n = groups.len().max(1);
    let labels: Vec<String> = groups.iter().map(|g| g.label.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0.0f64..top)
        .map_err(err(&what))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(y_label)
        .draw()
        .map_err(err(&what))?;
    let k = series.len().max(1) as f64;
    let width = 0.8 / k;
    for (j, name) in series.iter().enumerate() {
        let color = Palette99::pick(j).to_rgba();
        let mut rects = Vec::new();
        let mut whiskers = Vec::new();
        for (i, g) in groups.iter().enumerate() {
            let Some(Some(s)) = g.bars.get(j) else {
                continue;
            };
            let x0 = i as f64 - 0.4 + j as f64 * width;
            let x1 = x0 + width * 0.92;
            rects.push(Rectangle::new([(x0, 0.0), (x1, s.median)], color.filled()));
            let xm = (x0 + x1) / 2.0;
            whiskers.push(PathElement::new(
                vec![(xm, s.min), (xm, s.max)],
                BLACK.stroke_width(2),
            ));
            whiskers.push(PathElement::new(
                vec![(xm - width * 0.2, s.min), (xm + width * 0.2, s.min)],
                BLACK.stroke_width(1),
            ));
            whiskers.push(PathElement::new(
                vec![(xm - width * 0.2, s.max), (xm + width * 0.2, s.max)],
                BLACK.stroke_width(1),
            ));
        }
        chart
            .draw_series(rects)
            .map_err(err(&what))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        chart.draw_series(whiskers).map_err(err(&what))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err(&what))?;
    root.present().map_err(err(&what))?;
    Ok(())
}

/// One curve of a CDF plot: (round trip µs, quantile) points.
pub struct Curve {
    /// Legend label.
    pub label: String,
    /// Points, by increasing quantile.
    pub points: Vec<(f64, f64)>,
    /// Palette index.
    pub color: usize,
}

/// Round-trip CDFs on a logarithmic time axis.
pub fn cdf(path: &Path, title: &str, curves: &[Curve]) -> Result<()> {
    let what = path.display().to_string();
    let root = SVGBackend::new(path, (960, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(err(&what))?;
    let xs = || curves.iter().flat_map(|c| c.points.iter().map(|p| p.0));
    let lo = xs().filter(|x| *x > 0.0).fold(f64::INFINITY, f64::min);
    let hi = xs().fold(0.0f64, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > lo {
        (lo * 0.8, hi * 1.25)
    } else {
        (1.0, 1000.0)
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0f64..1.0)
        .map_err(err(&what))?;
    chart
        .configure_mesh()
        .x_desc("round trip, µs (log scale)")
        .y_desc("fraction of round trips ≤ x")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()
        .map_err(err(&what))?;
    for c in curves {
        let color = Palette99::pick(c.color).to_rgba();
        chart
            .draw_series(LineSeries::new(
                c.points.iter().filter(|p| p.0 > 0.0).copied(),
                color.stroke_width(2),
            ))
            .map_err(err(&what))?
            .label(c.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err(&what))?;
    root.present().map_err(err(&what))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_written_as_svg_with_their_labels() {
        let dir = std::env::temp_dir().join(format!("bench-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = |v: f64| {
            Some(Stat {
                median: v,
                min: v * 0.9,
                max: v * 1.1,
                n: 3,
            })
        };
        let bar_path = dir.join("bars.svg");
        bars(
            &bar_path,
            "throughput",
            "Gbit/s",
            &["tcp1", "tcp4"],
            &[
                Group {
                    label: "raw-veth".into(),
                    bars: vec![s(20.0), s(30.0)],
                },
                Group {
                    label: "boringtun".into(),
                    bars: vec![s(0.5), None],
                },
            ],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&bar_path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        assert!(svg.contains("raw-veth") && svg.contains("boringtun") && svg.contains("tcp4"));
        let cdf_path = dir.join("cdf.svg");
        cdf(
            &cdf_path,
            "latency",
            &[Curve {
                label: "idle".into(),
                points: vec![(20.0, 0.0), (25.0, 0.5), (90.0, 1.0)],
                color: 0,
            }],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&cdf_path).unwrap();
        assert!(svg.contains("idle") && svg.contains("<polyline"), "{svg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
