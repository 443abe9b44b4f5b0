//! Loss curves of a run: every phase on one figure, phase boundaries marked, training and
//! validation loss. SVG or PNG by the file's extension, drawn with a bundled font (no system
//! font libraries).

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

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

/// Draws the loss curves of `phases` to `path` (`.svg` or `.png`), atomically.
pub fn plot_losses(path: &Path, phases: &[PhaseReport]) -> Result<()> {
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
        draw(
            SVGBackend::new(temp.path(), size).into_drawing_area(),
            phases,
        )
    } else {
        draw(
            BitMapBackend::new(temp.path(), size).into_drawing_area(),
            phases,
        )
    };
    drawn.map_err(|message| Error::Io {
        path: path.into(),
        message,
    })?;
    temp.persist(path).map_err(|e| io_error(e.error))?;
    Ok(())
}

fn draw<DB: DrawingBackend>(
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
