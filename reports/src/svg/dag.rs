//! The stage DAG as an SVG: a layered (Sugiyama-style) layout, left to right. Layers are the
//! longest path from a source; order inside a layer follows the mean position of the parents
//! (the barycenter heuristic), which untangles most pipelines in two sweeps.

use std::fmt::Write;

use petgraph::algo::toposort;
use petgraph::graph::{DiGraph, NodeIndex};

use super::{clip, esc};

pub struct DagNode<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub status: &'a str,
    /// The id of the stage's section in the page.
    pub anchor: &'a str,
}

const NODE_W: f64 = 168.0;
const NODE_H: f64 = 40.0;
const GAP_X: f64 = 48.0;
const GAP_Y: f64 = 14.0;
const PAD: f64 = 8.0;

/// Draws `nodes` with `edges` given as (upstream, downstream) indexes into `nodes`.
pub fn dag_svg(nodes: &[DagNode], edges: &[(usize, usize)]) -> String {
    let pos = layout(nodes.len(), edges);
    let cols = pos.iter().map(|p| p.0 + 1).max().unwrap_or(1);
    let rows = pos.iter().map(|p| p.1 + 1).max().unwrap_or(1);
    let w = PAD * 2.0 + cols as f64 * NODE_W + (cols - 1) as f64 * GAP_X;
    let h = PAD * 2.0 + rows as f64 * NODE_H + (rows - 1) as f64 * GAP_Y;
    let xy = |i: usize| {
        let (c, r) = pos[i];
        (PAD + c as f64 * (NODE_W + GAP_X), PAD + r as f64 * (NODE_H + GAP_Y))
    };
    let mut s = String::with_capacity(256 * nodes.len() + 1024);
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="dag" viewBox="0 0 {w} {h}" style="max-width:{w}px" role="img" aria-label="Stage graph"><defs><marker id="arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0L8,4L0,8z" fill="#777"/></marker></defs>"##
    );
    for &(a, b) in edges {
        let ((ax, ay), (bx, by)) = (xy(a), xy(b));
        let (x1, y1, x2, y2) = (ax + NODE_W, ay + NODE_H / 2.0, bx, by + NODE_H / 2.0);
        let mx = (x1 + x2) / 2.0;
        let _ = write!(
            s,
            r#"<path class="edge" d="M{x1:.1},{y1:.1} C{mx:.1},{y1:.1} {mx:.1},{y2:.1} {x2:.1},{y2:.1}" marker-end="url(#arrow)"/>"#
        );
    }
    for (i, n) in nodes.iter().enumerate() {
        let (x, y) = xy(i);
        let _ = write!(
            s,
            r##"<a href="#{a}"><g class="node st-{st}" data-stage="{name}"><title>{name} ({kind}): {st}</title><rect x="{x:.1}" y="{y:.1}" width="{NODE_W}" height="{NODE_H}" rx="6"/><text class="node-name" x="{:.1}" y="{:.1}">{short}</text><text class="node-sub" x="{:.1}" y="{:.1}">{kshort} · {st}</text></g></a>"##,
            x + 8.0, y + 17.0, x + 8.0, y + 32.0,
            a = esc(n.anchor), st = esc(n.status), name = esc(n.name), kind = esc(n.kind),
            short = esc(&clip(n.name, 22)), kshort = esc(&clip(n.kind, 12)),
        );
    }
    s.push_str("</svg>");
    s
}

/// (layer, row) of every node.
fn layout(n: usize, edges: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut g: DiGraph<(), ()> = DiGraph::new();
    let idx: Vec<NodeIndex> = (0..n).map(|_| g.add_node(())).collect();
    for &(a, b) in edges {
        if a < n && b < n && a != b {
            g.update_edge(idx[a], idx[b], ());
        }
    }
    // A cycle cannot come from the engine; if one does, record order still draws something.
    let order: Vec<usize> = match toposort(&g, None) {
        Ok(o) => o.into_iter().map(|i| i.index()).collect(),
        Err(_) => (0..n).collect(),
    };
    let mut layer = vec![0usize; n];
    for &v in &order {
        for p in g.neighbors_directed(idx[v], petgraph::Incoming) {
            layer[v] = layer[v].max(layer[p.index()] + 1);
        }
    }
    let layers = layer.iter().max().map_or(0, |m| m + 1);
    let mut by_layer: Vec<Vec<usize>> = vec![Vec::new(); layers];
    for v in 0..n {
        by_layer[layer[v]].push(v);
    }
    let mut row = vec![0.0f64; n];
    for l in &by_layer {
        for (r, &v) in l.iter().enumerate() {
            row[v] = r as f64;
        }
    }
    for _sweep in 0..2 {
        for l in by_layer.iter_mut().skip(1) {
            let key = |v: usize| {
                let ps: Vec<f64> =
                    g.neighbors_directed(idx[v], petgraph::Incoming).map(|p| row[p.index()]).collect();
                if ps.is_empty() { row[v] } else { ps.iter().sum::<f64>() / ps.len() as f64 }
            };
            let mut keyed: Vec<(f64, usize)> = l.iter().map(|&v| (key(v), v)).collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            *l = keyed.into_iter().map(|k| k.1).collect();
            for (r, &v) in l.iter().enumerate() {
                row[v] = r as f64;
            }
        }
    }
    (0..n).map(|v| (layer[v], row[v] as usize)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_follow_longest_path() {
        // 0 -> 1 -> 3, 0 -> 3, 2 alone.
        let pos = layout(4, &[(0, 1), (1, 3), (0, 3)]);
        assert_eq!(pos[0].0, 0);
        assert_eq!(pos[1].0, 1);
        assert_eq!(pos[3].0, 2);
        assert_eq!(pos[2].0, 0);
    }

    #[test]
    fn every_node_links_to_its_section_and_names_are_escaped() {
        let nodes = [
            DagNode { name: "<x>", kind: "init", status: "ran", anchor: "stage-x" },
            DagNode { name: "b", kind: "eval", status: "failed", anchor: "stage-b" },
        ];
        let svg = dag_svg(&nodes, &[(0, 1)]);
        assert!(svg.contains(r##"href="#stage-x""##) && svg.contains("st-failed"));
        assert!(svg.contains("&lt;x&gt;") && !svg.contains("<x>"));
        assert_eq!(svg.matches(r#"class="edge""#).count(), 1);
        assert!(dag_svg(&[], &[]).ends_with("</svg>"));
    }
}
