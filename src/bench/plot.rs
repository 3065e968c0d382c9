//! Line charts as SVG text for `spate bench sweep` (the `plotters` crate, SVG backend only): one
//! line per series, a marker on every measured point, a legend, and axes labelled with their
//! units. Pure: returns the SVG; the caller writes it.

use anyhow::Result;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;

/// Chart size, pixels.
const WIDTH_PX: u32 = 900;
const HEIGHT_PX: u32 = 560;

/// One line: its legend text and its (x, y) points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A line chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    /// Axis descriptions, with units: `linger.ms (ms)`.
    pub x_label: String,
    pub y_label: String,
    /// A base-2 logarithmic x axis of byte sizes (ticks at powers of two, labelled in KiB/MiB).
    pub x_log: bool,
    pub series: Vec<Series>,
}

/// `chart` as an SVG document.
pub fn svg(chart: &Chart) -> Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH_PX, HEIGHT_PX)).into_drawing_area();
        root.fill(&WHITE)?;
        let xs = || chart.series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
        let (mut x0, mut x1) = xs().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
        if !x0.is_finite() {
            (x0, x1) = (0.0, 1.0);
        }
        let y_max = chart.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0, f64::max);
        // Headroom above the highest point for the legend, a line per series.
        let headroom = 1.15 + 0.06 * chart.series.len() as f64;
        let y_max = if y_max > 0.0 { y_max * headroom } else { 1.0 };
        if chart.x_log {
            let (x0, x1) = (x0.max(1.0), x1.max(1.0));
            let (x0, x1) = if x0 == x1 { (x0 / 2.0, x1 * 2.0) } else { (x0 / 1.25, x1 * 1.25) };
            draw(&root, chart, (x0..x1).log_scale().base(2.0), y_max, &|v| bytes_label(*v))?;
        } else {
            let pad = if x0 == x1 { 1.0 } else { (x1 - x0) * 0.05 };
            let x0 = if x0 >= 0.0 { (x0 - pad).max(0.0) } else { x0 - pad };
            draw(&root, chart, x0..x1 + pad, y_max, &|v| short_number(*v))?;
        }
        root.present()?;
    }
    Ok(out)
}

fn draw<X>(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    chart: &Chart,
    x: X,
    y_max: f64,
    x_ticks: &dyn Fn(&f64) -> String,
) -> Result<()>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let mut c = ChartBuilder::on(root)
        .caption(&chart.title, ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(x, 0f64..y_max)?;
    c.configure_mesh()
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .x_label_formatter(x_ticks)
        .y_label_formatter(&|v| short_number(*v))
        .axis_desc_style(("sans-serif", 16))
        .label_style(("sans-serif", 13))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (i, s) in chart.series.iter().enumerate() {
        let (r, g, b) = PALETTE[i % PALETTE.len()];
        let color = RGBColor(r, g, b);
        c.draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2)))?
            .label(s.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        c.draw_series(s.points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;
    Ok(())
}

/// Line colours, told apart also by people with the common colour blindnesses (Tableau 10).
const PALETTE: [(u8, u8, u8); 10] = [
    (0x1f, 0x77, 0xb4),
    (0xff, 0x7f, 0x0e),
    (0x2c, 0xa0, 0x2c),
    (0xd6, 0x27, 0x28),
    (0x94, 0x67, 0xbd),
    (0x8c, 0x56, 0x4b),
    (0xe3, 0x77, 0xc2),
    (0x7f, 0x7f, 0x7f),
    (0xbc, 0xbd, 0x22),
    (0x17, 0xbe, 0xcf),
];

/// A byte-size tick label: `512 B`, `16 KiB`, `1 MiB`, `1.5 MiB`.
pub fn bytes_label(v: f64) -> String {
    let (n, unit) = if v >= 1024.0 * 1024.0 {
        (v / (1024.0 * 1024.0), "MiB")
    } else if v >= 1024.0 {
        (v / 1024.0, "KiB")
    } else {
        (v, "B")
    };
    format!("{} {unit}", short_number(n))
}

/// A tick label: `0`, `5`, `2.5`, `1400`, `16.4k`, `1M`, `0.125`.
pub fn short_number(v: f64) -> String {
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    let a = v.abs();
    if a >= 1e9 {
        trim(format!("{:.2}", v / 1e9)) + "G"
    } else if a >= 1e6 {
        trim(format!("{:.2}", v / 1e6)) + "M"
    } else if a >= 1e4 {
        trim(format!("{:.1}", v / 1e3)) + "k"
    } else if a >= 10.0 || a == 0.0 {
        trim(format!("{v:.1}"))
    } else {
        trim(format!("{v:.3}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(short_number(0.0), "0");
        assert_eq!(short_number(5.0), "5");
        assert_eq!(short_number(2.5), "2.5");
        assert_eq!(short_number(0.125), "0.125");
        assert_eq!(short_number(16384.0), "16.4k");
        assert_eq!(short_number(131072.0), "131.1k");
        assert_eq!(short_number(1_000_000.0), "1M");
        assert_eq!(short_number(1_048_576.0), "1.05M");
        assert_eq!(short_number(1400.0), "1400");
        assert_eq!(bytes_label(512.0), "512 B");
        assert_eq!(bytes_label(16384.0), "16 KiB");
        assert_eq!(bytes_label(1_048_576.0), "1 MiB");
        assert_eq!(bytes_label(1_000_000.0), "976.6 KiB");
    }

    #[test]
    fn charts_render_as_svg_with_their_labels() {
        let chart = Chart {
            title: "Throughput vs batch.size".into(),
            x_label: "batch.size (bytes, log scale)".into(),
            y_label: "throughput (msg/s)".into(),
            x_log: true,
            series: vec![
                Series { name: "linger.ms 0".into(), points: vec![(16384.0, 1e5), (1048576.0, 3e5)] },
                Series { name: "linger.ms 5".into(), points: vec![(16384.0, 2e5), (1048576.0, 4e5)] },
            ],
        };
        let s = svg(&chart).unwrap();
        assert!(s.starts_with("<svg"), "{}", &s[..100]);
        assert!(s.trim_end().ends_with("</svg>"));
        for text in ["Throughput vs batch.size", "batch.size (bytes, log scale)", "throughput (msg/s)", "linger.ms 5"] {
            assert!(s.contains(text), "missing {text}");
        }
        // One point, linear axis, nothing measured: still a chart, not a panic.
        let one = Chart {
            x_log: false,
            series: vec![Series { name: "x".into(), points: vec![(5.0, 0.0)] }],
            ..chart.clone()
        };
        assert!(svg(&one).unwrap().contains("</svg>"));
        let empty = Chart { series: vec![], ..chart };
        assert!(svg(&empty).unwrap().contains("</svg>"));
    }
}
