//! Prompt sets for generation: each row's conversation up to the answer we want, from a
//! `messages` row (trailing assistant turns dropped: the model answers in their place) or a
//! `prompt` row (a string or a messages list, as preference data has it).

use super::base::BadRows;
use super::preference::prompt_of;
use crate::text::Message;

/// The prompts of `rows`, at most `limit`; rows without one are counted in `bad` by reason.
pub fn prompt_rows(rows: &[serde_json::Value], limit: Option<usize>, bad: &mut BadRows) -> Vec<Vec<Message>> {
    let mut out = Vec::new();
    for row in rows {
        if limit.is_some_and(|n| out.len() >= n) {
            break;
        }
        bad.seen();
        let field = if row.get("prompt").is_some() { row.get("prompt") } else { row.get("messages") };
        match prompt_of(field) {
            Ok(m) if m.last().is_some_and(|m| m.role == "user") => out.push(m),
            Ok(_) => bad.bad("no_user_turn"),
            Err(reason) => bad.bad(reason),
        }
    }
    out
}

/// A prompt as preference rows write it: one user message as a plain string, else the list.
pub fn prompt_json(prompt: &[Message]) -> serde_json::Value {
    match prompt {
        [only] if only.role == "user" => serde_json::Value::String(only.content.clone()),
        _ => serde_json::to_value(prompt).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_and_prompt_rows_give_prompts_and_bad_rows_are_counted() {
        let rows = [
            json!({ "messages": [{ "role": "user", "content": "hi" }, { "role": "assistant", "content": "old answer" }] }),
            json!({ "prompt": "2+2?" }),
            json!({ "prompt": [{ "role": "system", "content": "be brief" }, { "role": "user", "content": "why?" }] }),
            json!({ "text": "no prompt here" }),
            json!({ "messages": [{ "role": "system", "content": "only a system turn" }] }),
            json!({ "prompt": "over the limit" }),
        ];
        let mut bad = BadRows::default();
        let p = prompt_rows(&rows, Some(3), &mut bad);
        assert_eq!(p, vec![vec![Message::user("hi")], vec![Message::user("2+2?")], serde_json::from_value(rows[2]["prompt"].clone()).unwrap()]);
        assert_eq!(bad.total, 3);
        let mut bad = BadRows::default();
        assert_eq!(prompt_rows(&rows, None, &mut bad).len(), 4);
        assert_eq!((bad.counts["missing_field"], bad.counts["no_user_turn"]), (1, 1));
        assert_eq!(prompt_json(&p[1]), json!("2+2?"));
        assert_eq!(prompt_json(&p[2]), rows[2]["prompt"]);
    }
}
