//! Which drafted tokens the verifier keeps. Greedy: the longest prefix that equals the
//! verifier's own argmax, then the verifier's argmax. Sampling (Leviathan et al. 2023): accept
//! draft token `t` when `u * q(t) <= p(t)`; at the first rejection draw from
//! `max(p - q, 0)`; when every token is accepted draw a bonus token from the last `p`. Either
//! way the output is distributed as the verifier's own sampling.

use crate::generate::{argmax, LogitsProcessor, Sampling};

/// The outcome of one verification.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// How many drafted tokens were accepted.
    pub accepted: usize,
    /// The token after them: the verifier's correction or the bonus token.
    pub next: u32,
}

/// Judges `drafts` against the verifier's logits.
///
/// # Shapes
/// - `drafts`: `[k]`; `draft_probs`: `[k][vocab]` (the draft's distributions the tokens were
///   drawn from; unused when greedy); `verifier_logits`: `[k + 1][vocab]`
pub fn verify(drafts: &[u32], draft_probs: &[Vec<f32>], verifier_logits: &[Vec<f32>], processor: &mut LogitsProcessor) -> Verdict {
    if processor.sampling == Sampling::Greedy {
        for (i, &d) in drafts.iter().enumerate() {
            let want = argmax(&verifier_logits[i]);
            if want != d {
                return Verdict { accepted: i, next: want };
            }
        }
        return Verdict { accepted: drafts.len(), next: argmax(&verifier_logits[drafts.len()]) };
    }
    for (i, &d) in drafts.iter().enumerate() {
        let p = processor.probs(&verifier_logits[i]);
        let q = &draft_probs[i];
        let (pd, qd) = (p[d as usize], q[d as usize]);
        if processor.uniform() * qd <= pd {
            continue;
        }
        let residual: Vec<f32> = p.iter().zip(q).map(|(a, b)| (a - b).max(0.0)).collect();
        // A rejection implies p(d) < q(d), so some mass is left; rounding could still zero it.
        let next = if residual.iter().sum::<f32>() > 0.0 { processor.draw_from(&residual) } else { processor.draw_from(&p) };
        return Verdict { accepted: i, next };
    }
    let p = processor.probs(&verifier_logits[drafts.len()]);
    Verdict { accepted: drafts.len(), next: processor.draw_from(&p) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ln(p: &[f32]) -> Vec<f32> {
        p.iter().map(|v| v.ln()).collect()
    }

    #[test]
    fn greedy_keeps_the_prefix_that_matches_the_argmax() {
        let mut lp = LogitsProcessor::new(Sampling::Greedy, 0);
        let rows = vec![vec![0.0, 2.0, 1.0], vec![3.0, 0.0, 1.0], vec![0.0, 0.0, 5.0]];
        assert_eq!(verify(&[1, 0], &[], &rows, &mut lp), Verdict { accepted: 2, next: 2 });
        assert_eq!(verify(&[1, 2], &[], &rows, &mut lp), Verdict { accepted: 1, next: 0 });
        assert_eq!(verify(&[0, 0], &[], &rows, &mut lp), Verdict { accepted: 0, next: 1 });
    }

    /// One drafted token from q, verified against p: the output token is distributed as p
    /// (exactly: P(out = t) = min(p, q) + (1 - sum min(p, q)) * residual(t)).
    #[test]
    fn one_round_of_rejection_sampling_yields_the_verifiers_distribution() {
        let (p, q) = ([0.5f32, 0.3, 0.2, 0.0], [0.1f32, 0.1, 0.4, 0.4]);
        let mut lp = LogitsProcessor::new(Sampling::Temperature { temperature: 1.0 }, 3);
        let n = 20_000;
        let mut counts = [0usize; 4];
        let rows = vec![ln(&p), ln(&[0.25; 4])];
        for _ in 0..n {
            let d = lp.draw_from(&q);
            let v = verify(&[d], &[q.to_vec()], &rows, &mut lp);
            counts[if v.accepted == 1 { d } else { v.next } as usize] += 1;
        }
        for (c, want) in counts.iter().zip(p) {
            assert!((*c as f32 / n as f32 - want).abs() < 0.015, "{counts:?} vs {p:?}");
        }
    }
}
