//! Preference rows `{prompt, chosen, rejected}`, each a string or a messages list (Hugging
//! Face's binarized sets repeat the prompt inside `chosen`/`rejected`; the answer is then the
//! last assistant message).

use super::chat::{chat_example, parse_messages, Example};
use crate::text::{Message, TextTokenizer};

#[derive(Debug, Clone, PartialEq)]
pub struct PreferencePair {
    pub chosen: Example,
    pub rejected: Example,
}

pub(crate) fn prompt_of(v: Option<&serde_json::Value>) -> Result<Vec<Message>, &'static str> {
    match v {
        Some(serde_json::Value::String(s)) if s.trim().is_empty() => Err("empty_text"),
        Some(serde_json::Value::String(s)) => Ok(vec![Message::user(s.clone())]),
        other => {
            let mut m = parse_messages(other)?;
            while m.last().is_some_and(|m| m.role == "assistant") {
                m.pop();
            }
            if m.is_empty() { Err("empty_text") } else { Ok(m) }
        }
    }
}

/// A side's answer. An empty *rejected* answer is kept: a model that ends its turn at once gave
/// a real answer to reject (the pair teaches it to answer; the end-of-turn token is the masked
/// target), which is what `preference_pairs` records when the student says nothing. An empty
/// chosen answer is a bad row.
fn answer_of(v: Option<&serde_json::Value>, empty_ok: bool) -> Result<String, &'static str> {
    match v {
        Some(serde_json::Value::String(s)) if s.trim().is_empty() && empty_ok => Ok(String::new()),
        Some(serde_json::Value::String(s)) if s.trim().is_empty() => Err("empty_text"),
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        other => {
            let m = parse_messages(other)?;
            m.into_iter().rev().find(|m| m.role == "assistant").map(|m| m.content).ok_or("no_assistant")
        }
    }
}

/// Both sides of a row tokenized as prompt + answer with the answer masked in.
pub fn preference_pair(tok: &TextTokenizer, row: &serde_json::Value, max_prompt: usize, max_len: usize) -> crate::Result<Result<PreferencePair, &'static str>> {
    let parts = prompt_of(row.get("prompt")).and_then(|p| Ok((p, answer_of(row.get("chosen"), false)?, answer_of(row.get("rejected"), true)?)));
    let (prompt, chosen, rejected) = match parts {
        Ok(p) => p,
        Err(reason) => return Ok(Err(reason)),
    };
    let side = |answer: String| {
        let mut m = prompt.clone();
        m.push(Message { role: "assistant".into(), content: answer });
        chat_example(tok, &m, max_prompt, max_len)
    };
    Ok(match (side(chosen)?, side(rejected)?) {
        (Ok(chosen), Ok(rejected)) => Ok(PreferencePair { chosen, rejected }),
        (Err(r), _) | (_, Err(r)) => Err(r),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::fixtures::tokenizer;

    #[test]
    fn an_empty_rejected_answer_is_kept_and_an_empty_chosen_one_is_bad() {
        let tok = tokenizer();
        let pair = preference_pair(&tok, &serde_json::json!({ "prompt": "2+2?", "chosen": "4", "rejected": "" }), 100, 100).unwrap().unwrap();
        assert!(pair.rejected.mask.iter().any(|&m| m), "the end of the empty turn is the rejected target");
        assert!(pair.chosen.tokens.len() > pair.rejected.tokens.len());
        let bad = serde_json::json!({ "prompt": "2+2?", "chosen": " ", "rejected": "5" });
        assert_eq!(preference_pair(&tok, &bad, 100, 100).unwrap(), Err("empty_text"));
    }

    #[test]
    fn strings_and_message_lists_give_the_same_pair() {
        let tok = tokenizer();
        let plain = serde_json::json!({ "prompt": "2+2?", "chosen": "4", "rejected": "5" });
        let listed = serde_json::json!({
            "prompt": [{ "role": "user", "content": "2+2?" }],
            "chosen": [{ "role": "user", "content": "2+2?" }, { "role": "assistant", "content": "4" }],
            "rejected": [{ "role": "assistant", "content": "5" }]
        });
        let a = preference_pair(&tok, &plain, 100, 100).unwrap().unwrap();
        assert_eq!(a, preference_pair(&tok, &listed, 100, 100).unwrap().unwrap());
        let answer: Vec<u32> = a.chosen.tokens.iter().zip(&a.chosen.mask).filter(|(_, m)| **m).map(|(&t, _)| t).collect();
        assert_eq!(tok.decode(&answer, false).unwrap(), "4<|im_end|>\n");
        let missing = serde_json::json!({ "prompt": "x", "chosen": "y" });
        assert_eq!(preference_pair(&tok, &missing, 100, 100).unwrap(), Err("missing_field"));
    }
}
