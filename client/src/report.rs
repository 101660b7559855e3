//! `ember report`: one self-contained HTML file (inline SVG, no network) with a
//! confusion heatmap, per-class margin histograms, the 2-D projection coloured
//! by label, the top confusion pairs with example ids, and the action items.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use tonic::Status;

use crate::{Client, pb};

/// Everything a report shows, fetched from the server.
#[derive(Debug, Clone)]
pub struct ReportData {
    pub collection: String,
    pub version: String,
    pub confusion: pb::ConfusionReport,
    pub margin: pb::MarginReport,
    pub projection: pb::ProjectReport,
    pub actions: pb::ActionsReport,
}

/// Runs the evaluations a report needs (Confusion, Margin and Actions share one pass).
pub async fn fetch(
    c: &mut Client,
    collection: &str,
    version: &str,
    timeout: Option<Duration>,
) -> Result<ReportData, Status> {
    let confusion = c
        .confusion(
            pb::ConfusionRequest {
                collection: collection.into(),
                version: version.into(),
                top_pairs: None,
                mode: 0,
            },
            timeout,
        )
        .await?;
    let margin = c
        .margin(
            pb::MarginRequest {
                collection: collection.into(),
                version: version.into(),
                threshold: None,
                lowest_n: Some(20),
                mode: 0,
            },
            timeout,
        )
        .await?;
    let projection = c
        .project(
            pb::ProjectRequest {
                collection: collection.into(),
                version: version.into(),
                method: pb::ProjectionMethod::Pca as i32,
                sample_size: Some(3000),
                seed: Some(0),
            },
            timeout,
        )
        .await?;
    let actions = c
        .actions(
            pb::ActionsRequest {
                collection: collection.into(),
                version: version.into(),
                format: pb::ActionFormat::Markdown as i32,
                mode: 0,
            },
            timeout,
        )
        .await?;
    Ok(ReportData {
        collection: collection.into(),
        version: version.into(),
        confusion,
        margin,
        projection,
        actions,
    })
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// A distinct colour per label index.
fn colour(i: usize) -> String {
    const P: [&str; 12] = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
        "#bcbd22", "#17becf", "#393b79", "#ad494a",
    ];
    match P.get(i) {
        Some(c) => (*c).to_string(),
        None => format!("hsl({}, 60%, 45%)", (i * 137) % 360),
    }
}

fn heatmap(d: &ReportData) -> String {
    let classes: Vec<&pb::ClassSummary> = d.confusion.classes.iter().collect();
    let idx: BTreeMap<&str, usize> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.label.as_str(), i))
        .collect();
    let n = classes.len();
    let mut counts = vec![vec![0u64; n]; n];
    for (i, c) in classes.iter().enumerate() {
        counts[i][i] = (c.accuracy * c.count as f64).round() as u64;
    }
    for p in &d.confusion.pairs {
        if let (Some(&t), Some(&q)) = (
            idx.get(p.true_label.as_str()),
            idx.get(p.predicted_label.as_str()),
        ) {
            counts[t][q] = p.count;
        }
    }
    let cell = (480 / n.max(1)).clamp(12, 48);
    let left = 110;
    let top = 30;
    let size = left + cell * n + 20;
    let mut s = format!(
        r#"<svg id="confusion-heatmap" xmlns="http://www.w3.org/2000/svg" width="{size}" height="{}" role="img" aria-label="confusion heatmap">"#,
        top + cell * n + 110
    );
    for (i, row) in counts.iter().enumerate() {
        let total = classes[i].count.max(1) as f64;
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" font-size="11" text-anchor="end">{}</text>"#,
            left - 4,
            top + i * cell + cell / 2 + 4,
            esc(&classes[i].label)
        );
        for (j, &v) in row.iter().enumerate() {
            let rate = v as f64 / total;
            let (r, g, b) = if i == j {
                (
                    255.0 - 180.0 * rate,
                    255.0 - 60.0 * rate,
                    255.0 - 180.0 * rate,
                )
            } else {
                (
                    255.0,
                    255.0 - 220.0 * rate.sqrt(),
                    255.0 - 220.0 * rate.sqrt(),
                )
            };
            let _ = write!(
                s,
                r#"<rect class="cell" x="{}" y="{}" width="{cell}" height="{cell}" fill="rgb({:.0},{:.0},{:.0})" stroke="rgb(221,221,221)"><title>{} → {}: {v} ({:.1}%)</title></rect>"#,
                left + j * cell,
                top + i * cell,
                r,
                g,
                b,
                esc(&classes[i].label),
                esc(&classes[j].label),
                rate * 100.0
            );
        }
    }
    for (j, c) in classes.iter().enumerate() {
        let x = left + j * cell + cell / 2;
        let y = top + n * cell + 8;
        let _ = write!(
            s,
            r#"<text x="{x}" y="{y}" font-size="11" transform="rotate(60 {x} {y})">{}</text>"#,
            esc(&c.label)
        );
    }
    let _ = write!(
        s,
        r#"<text x="{left}" y="16" font-size="12">rows: true class, columns: nearest neighbour's class</text></svg>"#
    );
    s
}

fn histograms(d: &ReportData) -> String {
    let edges = &d.margin.histogram_edges;
    let (w, h, gap) = (220usize, 90usize, 16usize);
    let per_row = 3;
    let rows = d.margin.classes.len().div_ceil(per_row);
    let mut s = format!(
        r#"<svg id="margin-histograms" xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" role="img" aria-label="margin histograms">"#,
        per_row * (w + gap),
        rows * (h + 40)
    );
    for (k, c) in d.margin.classes.iter().enumerate() {
        let (ox, oy) = ((k % per_row) * (w + gap), (k / per_row) * (h + 40));
        let max = c.histogram.iter().copied().max().unwrap_or(1).max(1) as f64;
        let bw = w as f64 / c.histogram.len().max(1) as f64;
        let _ = write!(
            s,
            r#"<text x="{ox}" y="{}" font-size="11">{} (n={}, low {:.1}%)</text>"#,
            oy + 12,
            esc(&c.label),
            c.count,
            c.low_margin_fraction * 100.0
        );
        for (b, &v) in c.histogram.iter().enumerate() {
            let bh = (v as f64 / max) * h as f64;
            let lo = edges.get(b).copied().unwrap_or(0.0);
            let low = lo < d.margin.threshold;
            let _ = write!(
                s,
                r#"<rect class="bar" x="{:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{}"><title>[{lo:.3}, {:.3}): {v}</title></rect>"#,
                ox as f64 + b as f64 * bw,
                (oy + 18 + h) as f64 - bh,
                (bw - 1.0).max(1.0),
                if low { "#d62728" } else { "#4c72b0" },
                edges.get(b + 1).copied().unwrap_or(lo)
            );
        }
    }
    s.push_str("</svg>");
    s
}

fn scatter(d: &ReportData) -> String {
    let pts = &d.projection.points;
    let (w, h, pad) = (640.0, 480.0, 20.0);
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for p in pts {
        x0 = x0.min(p.x);
        x1 = x1.max(p.x);
        y0 = y0.min(p.y);
        y1 = y1.max(p.y);
    }
    let sx = (w - 2.0 * pad) / (x1 - x0).max(1e-12);
    let sy = (h - 2.0 * pad) / (y1 - y0).max(1e-12);
    let mut labels: Vec<&str> = pts.iter().map(|p| p.label.as_str()).collect();
    labels.sort_unstable();
    labels.dedup();
    let li: BTreeMap<&str, usize> = labels.iter().enumerate().map(|(i, l)| (*l, i)).collect();
    let mut s = format!(
        r#"<svg id="projection" xmlns="http://www.w3.org/2000/svg" width="{}" height="{h}" role="img" aria-label="2-D projection">"#,
        w + 160.0
    );
    for p in pts {
        let _ = write!(
            s,
            r#"<circle class="pt" cx="{:.1}" cy="{:.1}" r="2.5" fill="{}" fill-opacity="0.7"><title>{} ({})</title></circle>"#,
            pad + (p.x - x0) * sx,
            h - pad - (p.y - y0) * sy,
            colour(li[p.label.as_str()]),
            p.id,
            esc(&p.label)
        );
    }
    for (i, l) in labels.iter().enumerate() {
        let y = 20 + i * 16;
        let _ = write!(
            s,
            r#"<circle cx="{}" cy="{}" r="5" fill="{}"/><text x="{}" y="{}" font-size="11">{}</text>"#,
            w + 20.0,
            y,
            colour(i),
            w + 30.0,
            y + 4,
            esc(l)
        );
    }
    s.push_str("</svg>");
    s
}

/// The report as one HTML document.
pub fn render_html(d: &ReportData) -> String {
    let c = &d.confusion;
    let m = &d.margin;
    let mut pairs = String::new();
    for p in c.pairs.iter().take(15) {
        let ex: Vec<String> = p.example_ids.iter().map(u64::to_string).collect();
        let _ = write!(
            pairs,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}%</td><td>{:.1}%</td><td>{}</td></tr>",
            esc(&p.true_label),
            esc(&p.predicted_label),
            p.count,
            p.rate * 100.0,
            p.share_of_errors * 100.0,
            ex.join(", ")
        );
    }
    let mut actions = String::new();
    for a in &d.actions.items {
        let _ = write!(actions, "<pre class=\"ticket\">{}</pre>", esc(&a.markdown));
    }
    if actions.is_empty() {
        actions.push_str("<p>No action items: every signal is below its threshold.</p>");
    }
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>EmberDB report: {col} / {ver}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }}
h2 {{ border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ddd; padding: .25em .6em; text-align: left; }}
.summary span {{ display: inline-block; margin-right: 2em; }}
pre.ticket {{ background: #f7f7f7; border-left: 4px solid #d62728; padding: .6em 1em; white-space: pre-wrap; }}
</style></head>
<body>
<h1>Where does <code>{col}</code> / <code>{ver}</code> fail?</h1>
<p class="summary"><span>mode: {mode}</span><span>points: {points}</span><span>LOO 1-NN accuracy: {acc:.2}%</span><span>errors: {errors}</span><span>top-3 pairs hold {conc:.1}% of errors ({concd})</span><span>low-margin (&lt; {thr}): {low:.2}%</span></p>
<h2>Confusion</h2>
<figure>{heatmap}</figure>
<h2>Top confusion pairs</h2>
<table id="pairs"><tr><th>true</th><th>predicted</th><th>count</th><th>rate</th><th>share of errors</th><th>example ids</th></tr>{pairs}</table>
<h2>Margin per class</h2>
<p>Distance to the second-nearest minus the nearest other point; red bins are below the threshold. Most unstable classes first.</p>
<figure>{hist}</figure>
<h2>2-D projection (PCA)</h2>
<figure>{scatter}</figure>
<h2>Action items</h2>
<div id="actions">{actions}</div>
<script>
// Marks the document once every figure has rendered content (used by tests and handy in a browser console).
const figs = ["confusion-heatmap", "margin-histograms", "projection"].filter(id => {{
  const el = document.getElementById(id); return el && el.childElementCount > 0 && el.getBoundingClientRect().width > 0;
}});
document.body.dataset.figures = String(figs.length);
</script>
</body></html>
"#,
        col = esc(&d.collection),
        ver = esc(&d.version),
        mode = esc(&c.mode),
        points = c.points,
        acc = c.accuracy * 100.0,
        errors = c.errors,
        conc = c.concentration * 100.0,
        concd = if c.concentrated {
            "concentrated"
        } else {
            "spread out"
        },
        thr = m.threshold,
        low = m.low_margin_fraction * 100.0,
        heatmap = heatmap(d),
        hist = histograms(d),
        scatter = scatter(d),
    )
}
