//! Rejected answers made from a good one, for preference pairs when no weaker model answers:
//! cut short, or its sentences (words, for a single sentence) shuffled. Seeded per row.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// The first half of the answer's words (at least one word fewer than the whole).
pub fn truncated(answer: &str) -> String {
    let words: Vec<&str> = answer.split_whitespace().collect();
    if words.len() < 2 {
        // One word: half of its characters.
        let chars: Vec<char> = answer.trim().chars().collect();
        return chars[..chars.len() / 2].iter().collect();
    }
    words[..words.len() / 2].join(" ")
}

/// Sentences in a shuffled order; a single sentence has its words shuffled. The result differs
/// from the answer whenever any reordering can.
pub fn shuffled(answer: &str, seed: u64) -> String {
    let sentences = split_sentences(answer);
    let (parts, sep): (Vec<String>, &str) = if sentences.len() > 1 {
        (sentences, " ")
    } else {
        (answer.split_whitespace().map(String::from).collect(), " ")
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order = parts.clone();
    for _ in 0..8 {
        order.shuffle(&mut rng);
        if order != parts {
            break;
        }
    }
    order.join(sep)
}

/// Sentences, each keeping its closing punctuation.
fn split_sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        cur.push(c);
        if matches!(c, '.' | '!' | '?' | '\n') && !cur.trim().is_empty() {
            out.push(cur.trim().to_string());
            cur.clear();
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degradations_differ_from_the_answer_and_are_seeded() {
        assert_eq!(truncated("one two three four five"), "one two");
        assert_eq!(truncated("word"), "wo");
        let a = "The sky is blue. Grass is green! Is snow white? Yes.";
        let s = shuffled(a, 1);
        assert_ne!(s, a);
        assert_eq!(s, shuffled(a, 1));
        let mut got: Vec<String> = split_sentences(&s);
        let mut want = split_sentences(a);
        got.sort();
        want.sort();
        assert_eq!(got, want, "the same sentences");
        let w = shuffled("one sentence with words", 3);
        assert_ne!(w, "one sentence with words");
        assert_eq!(shuffled("x", 0), "x"); // nothing to reorder: the caller skips identical pairs
    }
}
