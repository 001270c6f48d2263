//! A `tokenizers` tokenizer built from GGUF metadata, as transformers builds it
//! (`integrations/gguf/gguf_tokenizer_mapping.py`): byte-level BPE over the file's vocabulary and
//! merges, control tokens (type 3) added as special, user-defined tokens (type 4) as plain added
//! tokens, a BOS template when `add_bos_token` is set.

use std::collections::BTreeMap;

use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

use super::reader::Gguf;
use crate::error::{Error, Result};

const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// GPT-2's byte -> printable character table.
pub fn bytes_to_unicode() -> BTreeMap<u8, char> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.into_iter().zip(cs).map(|(b, c)| (b as u8, char::from_u32(c).expect("valid char"))).collect()
}

/// The special-token strings and the chat template, for `tokenizer_config.json`.
#[derive(Debug, Clone, Default)]
pub struct TokenizerMeta {
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub unk_token: Option<String>,
    pub pad_token: Option<String>,
    pub add_bos_token: bool,
    pub chat_template: Option<String>,
}

impl Gguf {
    fn strings(&self, key: &str) -> Result<Vec<String>> {
        let arr = self.get(key).and_then(|v| v.as_array()).ok_or_else(|| self.meta_err(key, "missing or not an array"))?;
        arr.iter().map(|v| v.as_str().map(String::from).ok_or_else(|| self.meta_err(key, "not a string array"))).collect()
    }

    pub fn tokenizer(&self) -> Result<(Tokenizer, TokenizerMeta)> {
        let model = self.get("tokenizer.ggml.model").and_then(|v| v.as_str());
        match model {
            Some("gpt2") => {}
            None => return Err(Error::MissingTokenizer { path: self.path.clone() }),
            Some(other) => return Err(self.meta_err("tokenizer.ggml.model", format!("`{other}` is not supported (gpt2 is)"))),
        }
        let tokens = self.strings("tokenizer.ggml.tokens")?;
        let merges = self.strings("tokenizer.ggml.merges")?;
        let types: Vec<i64> = match self.get("tokenizer.ggml.token_type").and_then(|v| v.as_array()) {
            Some(a) => a.iter().map(|v| v.as_i64().unwrap_or(1)).collect(),
            None => Vec::new(),
        };
        let alphabet: std::collections::HashSet<char> = bytes_to_unicode().into_values().collect();
        let spelling = bytes_to_unicode();
        let respell = |t: &str| -> String {
            if t.chars().all(|c| alphabet.contains(&c)) {
                t.to_string()
            } else {
                t.bytes().map(|b| spelling[&b]).collect()
            }
        };
        let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (respell(t), i as u32)).collect();
        let merges: Vec<(String, String)> = merges
            .iter()
            .map(|m| m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())))
            .collect::<Option<_>>()
            .ok_or_else(|| self.meta_err("tokenizer.ggml.merges", "a merge without a space"))?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .continuing_subword_prefix(String::new())
            .fuse_unk(false)
            .build()
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut tok = Tokenizer::new(bpe);
        tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        tok.with_decoder(Some(ByteLevel::default()));
        let typed = |want: i64| tokens.iter().zip(&types).filter(move |(_, t)| **t == want).map(|(s, _)| s);
        let control: Vec<AddedToken> = typed(CONTROL)
            .filter(|s| s.chars().all(|c| alphabet.contains(&c)))
            .map(|s| AddedToken::from(s.clone(), true).normalized(false))
            .collect();
        tok.add_special_tokens(&control);
        let user: Vec<AddedToken> = typed(USER_DEFINED).map(|s| AddedToken::from(s.clone(), false).normalized(false)).collect();
        tok.add_tokens(&user);

        let token_of = |key: &str| {
            self.get(key).and_then(|v| v.as_u64()).and_then(|i| tokens.get(i as usize)).cloned()
        };
        let meta = TokenizerMeta {
            bos_token: token_of("tokenizer.ggml.bos_token_id"),
            eos_token: token_of("tokenizer.ggml.eos_token_id"),
            unk_token: token_of("tokenizer.ggml.unknown_token_id"),
            pad_token: token_of("tokenizer.ggml.padding_token_id"),
            add_bos_token: self.get("tokenizer.ggml.add_bos_token").and_then(|v| v.as_bool()).unwrap_or(false),
            chat_template: self.get("tokenizer.chat_template").and_then(|v| v.as_str()).map(String::from),
        };
        if let (true, Some(bos)) = (meta.add_bos_token, &meta.bos_token) {
            let id = tok.token_to_id(bos).unwrap_or(0);
            let post = TemplateProcessing::builder()
                .try_single(format!("{bos} $A"))
                .and_then(|b| b.try_pair(format!("{bos} $A {bos} $B")))
                .map_err(|e| Error::Tokenizer(e.to_string()))?
                .special_tokens(vec![(bos.clone(), id)])
                .build()
                .map_err(|e| Error::Tokenizer(e.to_string()))?;
            tok.with_post_processor(Some(post));
        }
        Ok((tok, meta))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_gpt2s() {
        let t = bytes_to_unicode();
        assert_eq!(t.len(), 256);
        assert_eq!(t[&b' '], 'Ġ');
        assert_eq!(t[&b'\n'], 'Ċ');
        assert_eq!(t[&b'a'], 'a');
    }
}
