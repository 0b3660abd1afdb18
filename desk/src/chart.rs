//! Charts as inline SVG, drawn on the server: no script, no external font
//! (labels use the page's own font), readable when printed.

use maud::{html, Markup, PreEscaped};

/// Colours of the series, in order (state groups, rating levels).
pub const PALETTE: [&str; 6] = ["#2f6fb0", "#e0a030", "#3a9a5b", "#c0392b", "#8e6bb8", "#7f8c8d"];

/// A horizontal bar per row, with its value at the end.
pub fn bars(rows: &[(String, u64)]) -> Markup {
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1);
    let row_h = 24u64;
    let label_w = 150u64;
    let bar_w = 420u64;
    let height = row_h * rows.len() as u64 + 8;
    html! {
        svg.chart xmlns="http://www.w3.org/2000/svg" width=(label_w + bar_w + 80) height=(height)
            viewBox=(format!("0 0 {} {height}", label_w + bar_w + 80)) role="img" {
            @for (i, (label, value)) in rows.iter().enumerate() {
                @let y = i as u64 * row_h + 4;
                @let w = value * bar_w / max;
                text x=(label_w - 8) y=(y + 16) text-anchor="end" font-size="13" { (label) }
                rect x=(label_w) y=(y + 3) width=(w.max(1)) height=(row_h - 8) fill=(PALETTE[0]) {}
                text x=(label_w + w + 6) y=(y + 16) font-size="12" { (value) }
            }
        }
    }
}

/// One stacked bar per row; `series` names the parts and their colours (a
/// legend is drawn).
pub fn stacked(rows: &[(String, Vec<u64>)], series: &[(&str, &str)]) -> Markup {
    let max = rows.iter().map(|r| r.1.iter().sum::<u64>()).max().unwrap_or(0).max(1);
    let row_h = 22u64;
    let label_w = 150u64;
    let bar_w = 460u64;
    let legend_h = 26u64;
    let height = legend_h + row_h * rows.len() as u64 + 8;
    let width = label_w + bar_w + 70;
    html! {
        svg.chart xmlns="http://www.w3.org/2000/svg" width=(width) height=(height)
            viewBox=(format!("0 0 {width} {height}")) role="img" {
            @for (k, (name, colour)) in series.iter().enumerate() {
                @let x = label_w + k as u64 * 95;
                rect x=(x) y="6" width="12" height="12" fill=(colour) {}
                text x=(x + 16) y="17" font-size="12" { (name) }
            }
            @for (i, (label, parts)) in rows.iter().enumerate() {
                @let y = legend_h + i as u64 * row_h;
                @let segments = layout(parts, label_w, bar_w, max);
                @let end = segments.last().map(|s| s.0 + s.1).unwrap_or(label_w);
                text x=(label_w - 8) y=(y + 15) text-anchor="end" font-size="13" { (label) }
                @for (x, w, k, v) in segments {
                    rect x=(x) y=(y + 3) width=(w) height=(row_h - 7) fill=(series.get(k).map_or(PALETTE[0], |s| s.1)) {
                        title { (series.get(k).map_or("", |s| s.0)) "：" (v) }
                    }
                }
                text x=(end + 6) y=(y + 15) font-size="12" { (parts.iter().sum::<u64>()) }
            }
        }
    }
}

/// (x, width, series, value) of each non-empty part of a stacked bar.
fn layout(parts: &[u64], start: u64, bar_w: u64, max: u64) -> Vec<(u64, u64, usize, u64)> {
    let mut x = start;
    let mut out = Vec::new();
    for (k, v) in parts.iter().enumerate() {
        let w = v * bar_w / max;
        if w > 0 {
            out.push((x, w, k, *v));
            x += w;
        }
    }
    out
}

/// A QR code of `data` as inline SVG (dark modules only, no script).
pub fn qr(data: &str) -> Markup {
    match qrcode::QrCode::new(data.as_bytes()) {
        Ok(code) => {
            let svg = code.render::<qrcode::render::svg::Color>().min_dimensions(120, 120).quiet_zone(true).build();
            // The renderer's output is an SVG document of its own making
            // from our data's bits, never the data's text.
            let start = svg.find("<svg").unwrap_or(0);
            PreEscaped(svg[start..].to_string())
        }
        Err(_) => html! {},
    }
}
