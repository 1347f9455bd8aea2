//! The curve as a picture: panels side by side, one line per design, the
//! offered load along the bottom. Plain SVG, no dependencies.

use std::fmt::Write as _;

/// One line: its name, colour and points (x, y).
pub struct Line {
    pub name: String,
    pub colour: &'static str,
    pub points: Vec<(f64, f64)>,
}

/// One panel: a title, the y axis's name, an optional goal drawn dashed.
pub struct Panel {
    pub title: String,
    pub y_label: String,
    pub goal: Option<f64>,
    pub lines: Vec<Line>,
}

const W: f64 = 360.0;
const H: f64 = 240.0;
const LEFT: f64 = 55.0;
const BOTTOM: f64 = 40.0;
const TOP: f64 = 30.0;

fn nice_max(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if value <= step * magnitude {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

fn panel(out: &mut String, at_x: f64, panel: &Panel, x_label: &str) {
    let xs = panel.lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
    let ys = panel.lines.iter().flat_map(|l| l.points.iter().map(|p| p.1)).chain(panel.goal);
    let x_max = nice_max(xs.fold(0.0, f64::max));
    // With a goal, the axis stops at five times it: a point past that is
    // drawn on the edge with its value.
    let cap = panel.goal.map_or(f64::INFINITY, |goal| goal * 5.0);
    let y_max = nice_max(ys.fold(0.0, f64::max).min(cap) * 1.05);
    let plot_w = W - LEFT - 15.0;
    let plot_h = H - TOP - BOTTOM;
    let x = |v: f64| at_x + LEFT + v / x_max * plot_w;
    let y = |v: f64| TOP + plot_h - v / y_max * plot_h;
    let _ =
        writeln!(out, r#"<text x="{}" y="18" font-size="13" font-weight="bold">{}</text>"#, at_x + LEFT, panel.title);
    let _ = writeln!(
        out,
        r##"<rect x="{}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>"##,
        at_x + LEFT
    );
    for tick in 0..=4 {
        let value = y_max * tick as f64 / 4.0;
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" font-size="10" text-anchor="end">{}</text><line x1="{}" x2="{}" y1="{}" y2="{}" stroke="#eee"/>"##,
            at_x + LEFT - 4.0,
            y(value) + 3.0,
            trim(value),
            at_x + LEFT,
            at_x + LEFT + plot_w,
            y(value),
            y(value)
        );
        let xv = x_max * tick as f64 / 4.0;
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" font-size="10" text-anchor="middle">{}</text>"#,
            x(xv),
            TOP + plot_h + 14.0,
            trim(xv)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-size="11" text-anchor="middle">{x_label}</text>"#,
        at_x + LEFT + plot_w / 2.0,
        H - 8.0
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-size="11" text-anchor="middle" transform="rotate(-90 {} {})">{}</text>"#,
        at_x + 14.0,
        TOP + plot_h / 2.0,
        at_x + 14.0,
        TOP + plot_h / 2.0,
        panel.y_label
    );
    if let Some(goal) = panel.goal {
        let _ = writeln!(
            out,
            r##"<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="#2a2" stroke-dasharray="5,4"/><text x="{}" y="{}" font-size="10" fill="#2a2">goal</text>"##,
            at_x + LEFT,
            at_x + LEFT + plot_w,
            y(goal),
            y(goal),
            at_x + LEFT + 4.0,
            y(goal) - 3.0
        );
    }
    for (i, line) in panel.lines.iter().enumerate() {
        let points: Vec<String> =
            line.points.iter().map(|(px, py)| format!("{:.1},{:.1}", x(*px), y(py.min(y_max)))).collect();
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
            points.join(" "),
            line.colour
        );
        for (px, py) in &line.points {
            let _ = writeln!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"#,
                x(*px),
                y(py.min(y_max)),
                line.colour
            );
            if *py > y_max {
                let _ = writeln!(
                    out,
                    r#"<text x="{:.1}" y="{:.1}" font-size="9" fill="{}" text-anchor="middle">↑{}</text>"#,
                    x(*px),
                    y(y_max) + 12.0,
                    line.colour,
                    trim(*py)
                );
            }
        }
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" font-size="10" fill="{}">{}</text>"#,
            at_x + LEFT + 6.0,
            TOP + 12.0 + 12.0 * i as f64,
            line.colour,
            line.name
        );
    }
}

fn trim(value: f64) -> String {
    if value >= 100.0 || value == value.round() {
        format!("{value:.0}")
    } else {
        format!("{value:.2}").trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// The panels side by side, with a caption under them.
pub fn chart(panels: &[Panel], x_label: &str, caption: &str) -> String {
    let width = W * panels.len() as f64;
    let height = H + 22.0;
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif">"#
    );
    out.push('\n');
    let _ = writeln!(out, r#"<rect width="{width}" height="{height}" fill="white"/>"#);
    for (i, p) in panels.iter().enumerate() {
        panel(&mut out, W * i as f64, p, x_label);
    }
    let _ = writeln!(out, r##"<text x="8" y="{}" font-size="10" fill="#555">{caption}</text>"##, H + 14.0);
    out.push_str("</svg>\n");
    out
}
