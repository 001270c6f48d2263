//! Ordering the stage DAG with petgraph, and naming every stage of a cycle.

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

/// A topological order that keeps declaration order where the DAG allows, or the stages of
/// one cycle in order (`[a, b, c]` means a -> b -> c -> a).
pub fn order(n: usize, edges: &[(usize, usize)]) -> Result<Vec<usize>, Vec<usize>> {
    let mut g: DiGraph<usize, ()> = DiGraph::with_capacity(n, edges.len());
    let nodes: Vec<NodeIndex> = (0..n).map(|i| g.add_node(i)).collect();
    for &(a, b) in edges {
        g.update_edge(nodes[a], nodes[b], ());
    }
    for scc in tarjan_scc(&g) {
        let cyclic = scc.len() > 1 || g.contains_edge(scc[0], scc[0]);
        if cyclic {
            return Err(cycle_in(&g, &scc));
        }
    }
    // Kahn's algorithm, always taking the earliest-declared ready stage.
    let mut indegree = vec![0usize; n];
    for e in g.edge_indices() {
        let (_, b) = g.edge_endpoints(e).expect("edge exists");
        indegree[b.index()] += 1;
    }
    let mut ready: std::collections::BTreeSet<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut out = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        out.push(i);
        for next in g.neighbors(nodes[i]) {
            let j = next.index();
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.insert(j);
            }
        }
    }
    Ok(out)
}

/// Walks inside one strongly connected component until a stage repeats.
fn cycle_in(g: &DiGraph<usize, ()>, scc: &[NodeIndex]) -> Vec<usize> {
    let start = *scc.iter().min_by_key(|n| n.index()).expect("non-empty component");
    let mut path = vec![start];
    let mut cur = start;
    loop {
        let next = g
            .neighbors(cur)
            .filter(|n| scc.contains(n))
            .min_by_key(|n| n.index())
            .expect("every node of a cycle has a successor in it");
        if let Some(pos) = path.iter().position(|&p| p == next) {
            return path[pos..].iter().map(|n| g[*n]).collect();
        }
        path.push(next);
        cur = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_declaration_order_when_free() {
        assert_eq!(order(4, &[(3, 0)]).unwrap(), vec![1, 2, 3, 0]);
        assert_eq!(order(3, &[(0, 2), (1, 2)]).unwrap(), vec![0, 1, 2]);
        assert_eq!(order(3, &[]).unwrap(), vec![0, 1, 2]);
    }

    #[test]
    fn diamond_orders_before_join() {
        let o = order(4, &[(0, 1), (0, 2), (1, 3), (2, 3)]).unwrap();
        assert_eq!(o, vec![0, 1, 2, 3]);
    }

    #[test]
    fn names_every_stage_of_a_cycle() {
        assert_eq!(order(4, &[(0, 1), (1, 2), (2, 3), (3, 1)]).unwrap_err(), vec![1, 2, 3]);
        assert_eq!(order(2, &[(1, 1)]).unwrap_err(), vec![1]);
    }
}
