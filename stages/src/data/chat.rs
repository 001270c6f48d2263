//! Chat rows (`{"messages": [{"role", "content"}...]}`) rendered with the tokenizer's own chat
//! template, with a loss mask on assistant tokens: a token is an assistant token when its text
//! lies inside what the template wrote for an assistant message, found by rendering each
//! conversation prefix (`messages[..k]` with the generation prompt) and the prefix with the
//! answer (`messages[..=k]`).

use crate::text::{Message, TextTokenizer};

/// A tokenized example: `tokens` and, per token, whether the loss counts it as a target.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub tokens: Vec<u32>,
    pub mask: Vec<bool>,
}

/// The messages of a row, or the bad-row reason.
pub fn parse_messages(value: Option<&serde_json::Value>) -> Result<Vec<Message>, &'static str> {
    let list = value.and_then(|v| v.as_array()).ok_or("missing_field")?;
    let mut out = Vec::with_capacity(list.len());
    for m in list {
        let role = m.get("role").and_then(|r| r.as_str()).ok_or("missing_field")?;
        let content = m.get("content").and_then(|c| c.as_str()).ok_or("missing_field")?;
        if !matches!(role, "system" | "user" | "assistant") {
            return Err("bad_role");
        }
        if content.trim().is_empty() {
            return Err("empty_text");
        }
        out.push(Message { role: role.into(), content: content.into() });
    }
    if out.is_empty() {
        return Err("empty_text");
    }
    Ok(out)
}

/// Tokenizes `messages` with assistant tokens masked in. `max_prompt` bounds the tokens before
/// the first answer; the whole example is cut to `max_len`.
pub fn chat_example(tok: &TextTokenizer, messages: &[Message], max_prompt: usize, max_len: usize) -> crate::Result<Result<Example, &'static str>> {
    let mut spans = Vec::new();
    for (k, _) in messages.iter().enumerate().filter(|(_, m)| m.role == "assistant") {
        let before = tok.apply_chat_template(&messages[..k], true)?;
        let with = tok.apply_chat_template(&messages[..=k], false)?;
        if !with.starts_with(&before) {
            return Ok(Err("template_not_incremental"));
        }
        // The answer and whatever the template closes it with (end-of-turn), as the model must
        // learn to stop.
        spans.push((before.len(), with.len()));
    }
    if spans.is_empty() {
        return Ok(Err("no_assistant"));
    }
    let full = tok.apply_chat_template(messages, false)?;
    let enc = tok.inner.encode(full.as_str(), false).map_err(|e| crate::Error::Tokenizer(e.to_string()))?;
    let tokens = enc.get_ids().to_vec();
    let mask: Vec<bool> = enc.get_offsets().iter().map(|&(start, _)| spans.iter().any(|&(a, b)| start >= a && start < b)).collect();
    let prompt = mask.iter().position(|&m| m).unwrap_or(tokens.len());
    if prompt > max_prompt {
        return Ok(Err("prompt_too_long"));
    }
    let n = tokens.len().min(max_len);
    Ok(Ok(Example { tokens: tokens[..n].to_vec(), mask: mask[..n].to_vec() }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::fixtures::tokenizer;

    fn msg(role: &str, content: &str) -> Message {
        Message { role: role.into(), content: content.into() }
    }

    #[test]
    fn only_assistant_answers_and_their_end_of_turn_are_masked_in() {
        let tok = tokenizer();
        let m = [msg("system", "be brief"), msg("user", "hi"), msg("assistant", "yo"), msg("user", "and?"), msg("assistant", "ok")];
        let ex = chat_example(&tok, &m, 1000, 1000).unwrap().unwrap();
        let picked: Vec<u32> = ex.tokens.iter().zip(&ex.mask).filter(|(_, m)| **m).map(|(&t, _)| t).collect();
        // "yo<|im_end|>\n" and "ok<|im_end|>\n": 2 bytes + end of turn + newline, twice.
        assert_eq!(tok.decode(&picked, false).unwrap(), "yo<|im_end|>\nok<|im_end|>\n");
        assert_eq!(ex.tokens.len(), ex.mask.len());
        assert_eq!(chat_example(&tok, &m[..2], 1000, 1000).unwrap(), Err("no_assistant"));
        assert_eq!(chat_example(&tok, &m, 5, 1000).unwrap(), Err("prompt_too_long"));
        assert_eq!(chat_example(&tok, &m, 1000, 7).unwrap().unwrap().tokens.len(), 7);
    }

    #[test]
    fn bad_rows_name_their_reason() {
        let row = |v: serde_json::Value| parse_messages(Some(&v));
        assert_eq!(row(serde_json::json!([{ "role": "robot", "content": "x" }])), Err("bad_role"));
        assert_eq!(row(serde_json::json!([{ "role": "user", "content": " " }])), Err("empty_text"));
        assert_eq!(row(serde_json::json!([{ "role": "user" }])), Err("missing_field"));
        assert_eq!(parse_messages(None), Err("missing_field"));
    }
}
