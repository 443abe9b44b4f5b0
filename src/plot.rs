//! Loss curves of a run: every phase on one figure, phase boundaries marked, training and
//! validation loss. SVG or PNG by the file's extension, drawn with a bundled font (no system
//! font libraries).

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::sweep::Axis;
use crate::{Error, PhaseReport, Result};

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bundled font is a valid TrueType file; a failure here would show as missing text.
        if plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_err() {
            log::warn!("the bundled plot font could not be loaded");
        }
    });
}

/// A figure that draws itself on any plotters backend.
trait Figure {
    fn draw<DB: DrawingBackend>(
        &self,
        area: DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), String>;
}

/// Draws the loss curves of `phases` to `path` (`.svg` or `.png`), atomically.
pub fn plot_losses(path: &Path, phases: &[PhaseReport]) -> Result<()> {
    write_figure(path, &Losses(phases))
}

/// Draws a sweep's metric over its grid to `path` (`.svg` or `.png`), atomically: a heat map
/// for two axes, else one panel per axis with each value's best over the other axes.
/// `points` holds every configuration's (axis, value) settings and its metric.
pub fn plot_sweep(
    path: &Path,
    axes: &[Axis],
    points: &[(Vec<(String, String)>, f64)],
    metric: &str,
) -> Result<()> {
    if axes.is_empty() {
        return Err(Error::Config(
            "--plot draws the metric over the grid's axes; this sweep has none".into(),
        ));
    }
    write_figure(
        path,
        &Sweep {
            axes,
            points,
            metric,
        },
    )
}

fn write_figure<F: Figure>(path: &Path, figure: &F) -> Result<()> {
    register_font();
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let suffix = match extension.as_deref() {
        Some("svg") => ".svg",
        Some("png") => ".png",
        _ => {
            return Err(Error::Config(format!(
                "{}: the plot must be a .svg or .png file",
                path.display()
            )));
        }
    };
    let folder = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let io_error = |e: std::io::Error| Error::Io {
        path: path.into(),
        message: e.to_string(),
    };
    let temp = crate::io::temp_file_in(folder, suffix).map_err(io_error)?;
    let size = (960, 540);
    let drawn = if suffix == ".svg" {
        figure.draw(SVGBackend::new(temp.path(), size).into_drawing_area())
    } else {
        figure.draw(BitMapBackend::new(temp.path(), size).into_drawing_area())
    };
    drawn.map_err(|message| Error::Io {
        path: path.into(),
        message,
    })?;
    temp.persist(path).map_err(|e| io_error(e.error))?;
    Ok(())
}

struct Losses<'a>(&'a [PhaseReport]);

impl Figure for Losses<'_> {
    fn draw<DB: DrawingBackend>(
        &self,
        area: DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), String> {
        draw_losses(area, self.0)
    }
}

struct Sweep<'a> {
    axes: &'a [Axis],
    points: &'a [(Vec<(String, String)>, f64)],
    metric: &'a str,
}

impl Sweep<'_> {
    /// The best metric among the configurations whose settings match `want` on the axes it
    /// names (lower for log-loss, higher for the others).
    fn best(&self, want: &[(usize, usize)]) -> f64 {
        let lower = self.metric == "log-loss";
        self.points
            .iter()
            .filter(|(settings, _)| {
                want.iter()
                    .all(|&(a, v)| settings[a].1 == self.axes[a].values[v])
            })
            .map(|p| p.1)
            .filter(|v| v.is_finite())
            .fold(f64::NAN, |b, v| {
                if b.is_nan() || (lower && v < b) || (!lower && v > b) {
                    v
                } else {
                    b
                }
            })
    }
}

impl Figure for Sweep<'_> {
    fn draw<DB: DrawingBackend>(
        &self,
        area: DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), String> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        area.fill(&WHITE).map_err(err)?;
        if let [x_axis, y_axis] = self.axes {
            let (nx, ny) = (x_axis.values.len(), y_axis.values.len());
            let cells: Vec<(usize, usize, f64)> = (0..nx)
                .flat_map(|i| (0..ny).map(move |j| (i, j)))
                .map(|(i, j)| (i, j, self.best(&[(0, i), (1, j)])))
                .collect();
            let finite = cells.iter().map(|c| c.2).filter(|v| v.is_finite());
            let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            });
            let mut chart = ChartBuilder::on(&area)
                .caption(
                    format!("bilevel sweep: held-out {}", self.metric),
                    ("sans-serif", 22),
                )
                .margin(16)
                .x_label_area_size(48)
                .y_label_area_size(96)
                .build_cartesian_2d(0.0..nx as f64, 0.0..ny as f64)
                .map_err(err)?;
            let x_names = x_axis.values.clone();
            let y_names = y_axis.values.clone();
            chart
                .configure_mesh()
                .disable_mesh()
                .x_desc(x_axis.name.as_str())
                .y_desc(y_axis.name.as_str())
                .x_labels(nx * 2 + 1)
                .y_labels(ny * 2 + 1)
                .x_label_formatter(&|v| category(&x_names, *v))
                .y_label_formatter(&|v| category(&y_names, *v))
                .label_style(("sans-serif", 14))
                .draw()
                .map_err(err)?;
            let lower = self.metric == "log-loss";
            for &(i, j, v) in &cells {
                // Dark is good: the scale runs from the worst value to the best.
                let good = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
                let good = if lower { 1.0 - good } else { good };
                let colour = if v.is_finite() {
                    HSLColor(0.6, 0.7, 0.92 - 0.6 * good)
                } else {
                    HSLColor(0.0, 0.0, 0.8)
                };
                let (x, y) = (i as f64, j as f64);
                chart
                    .draw_series([Rectangle::new(
                        [(x, y), (x + 1.0, y + 1.0)],
                        colour.filled(),
                    )])
                    .map_err(err)?;
                let ink = if good > 0.5 { WHITE } else { BLACK };
                chart
                    .draw_series([Text::new(
                        format!("{v:.4}"),
                        (x + 0.35, y + 0.5),
                        ("sans-serif", 14).into_font().color(&ink),
                    )])
                    .map_err(err)?;
            }
        } else {
            let panels = area.split_evenly((1, self.axes.len()));
            for (a, (axis, panel)) in self.axes.iter().zip(panels).enumerate() {
                let values: Vec<(f64, f64)> = (0..axis.values.len())
                    .map(|v| (v as f64 + 0.5, self.best(&[(a, v)])))
                    .collect();
                let finite = values.iter().map(|p| p.1).filter(|v| v.is_finite());
                let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                    (a.min(v), b.max(v))
                });
                let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
                let pad = ((hi - lo) * 0.1).max(1e-6);
                let names = axis.values.clone();
                let mut chart = ChartBuilder::on(&panel)
                    .caption(axis.name.as_str(), ("sans-serif", 18))
                    .margin(12)
                    .x_label_area_size(40)
                    .y_label_area_size(64)
                    .build_cartesian_2d(0.0..names.len() as f64, (lo - pad)..(hi + pad))
                    .map_err(err)?;
                chart
                    .configure_mesh()
                    .x_labels(names.len() * 2 + 1)
                    .x_label_formatter(&|v| category(&names, *v))
                    .y_desc(format!("best held-out {}", self.metric))
                    .label_style(("sans-serif", 13))
                    .draw()
                    .map_err(err)?;
                let finite_points: Vec<(f64, f64)> =
                    values.iter().copied().filter(|p| p.1.is_finite()).collect();
                chart
                    .draw_series(LineSeries::new(finite_points.clone(), BLUE.stroke_width(2)))
                    .map_err(err)?;
                chart
                    .draw_series(
                        finite_points
                            .into_iter()
                            .map(|p| Circle::new(p, 4, BLUE.filled())),
                    )
                    .map_err(err)?;
            }
        }
        area.present().map_err(err)?;
        Ok(())
    }
}

/// The name of the category whose cell holds `v` at its middle, else nothing (a tick).
fn category(names: &[String], v: f64) -> String {
    let i = v - 0.5;
    if i >= 0.0 && i.fract().abs() < 1e-6 {
        names.get(i as usize).cloned().unwrap_or_default()
    } else {
        String::new()
    }
}

fn draw_losses<DB: DrawingBackend>(
    area: DrawingArea<DB, Shift>,
    phases: &[PhaseReport],
) -> std::result::Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    area.fill(&WHITE).map_err(err)?;
    // Steps continue across phases on one axis.
    let mut train = Vec::new();
    let mut validation = Vec::new();
    let mut boundaries = Vec::new();
    let mut offset = 0.0;
    for phase in phases {
        for c in &phase.checks {
            train.push((offset + c.step as f64, c.loss));
            if let Some(v) = c.val_loss {
                validation.push((offset + c.step as f64, v));
            }
        }
        offset += phase.steps as f64;
        boundaries.push((offset, phase.name.clone()));
    }
    let finite = train
        .iter()
        .chain(&validation)
        .map(|p| p.1)
        .filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.05).max(1e-9);
    let mut chart = ChartBuilder::on(&area)
        .caption("bilevel: loss per step", ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..offset.max(1.0), (lo - pad)..(hi + pad))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("step (all phases)")
        .y_desc("mean BCE loss")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    let mut start = 0.0;
    for (end, name) in &boundaries {
        chart
            .draw_series(LineSeries::new(
                [(*end, lo - pad), (*end, hi + pad)],
                BLACK.mix(0.4),
            ))
            .map_err(err)?;
        chart
            .draw_series([Text::new(
                name.clone(),
                (start + (end - start) * 0.02, hi + pad * 0.2),
                ("sans-serif", 14),
            )])
            .map_err(err)?;
        start = *end;
    }
    chart
        .draw_series(LineSeries::new(train, BLUE.stroke_width(2)))
        .map_err(err)?
        .label("train")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    if !validation.is_empty() {
        chart
            .draw_series(LineSeries::new(validation, RED.stroke_width(2)))
            .map_err(err)?
            .label("validation")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    area.present().map_err(err)?;
    Ok(())
}
