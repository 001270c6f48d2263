//! The tokenizer of a model folder: `tokenizer.json` plus what `tokenizer_config.json` says
//! (special tokens, chat template, whether to add BOS).

use std::path::Path;

use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::gguf::TokenizerMeta;

/// A special token in `tokenizer_config.json`: a string or `{ "content": ... }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SpecialToken {
    Text(String),
    Added { content: String },
}

impl SpecialToken {
    pub fn text(&self) -> &str {
        match self {
            SpecialToken::Text(s) | SpecialToken::Added { content: s } => s,
        }
    }
}

/// The fields of `tokenizer_config.json` we read and write.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HfTokenizerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token: Option<SpecialToken>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token: Option<SpecialToken>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unk_token: Option<SpecialToken>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token: Option<SpecialToken>,
    #[serde(default)]
    pub add_bos_token: bool,
    #[serde(default)]
    pub add_eos_token: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_max_length: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer_class: Option<String>,
}

impl From<&TokenizerMeta> for HfTokenizerConfig {
    fn from(m: &TokenizerMeta) -> Self {
        let t = |s: &Option<String>| s.clone().map(SpecialToken::Text);
        HfTokenizerConfig {
            bos_token: t(&m.bos_token),
            eos_token: t(&m.eos_token),
            unk_token: t(&m.unk_token),
            pad_token: t(&m.pad_token),
            add_bos_token: m.add_bos_token,
            add_eos_token: false,
            chat_template: m.chat_template.clone(),
            model_max_length: None,
            tokenizer_class: Some("PreTrainedTokenizerFast".into()),
        }
    }
}

/// A tokenizer with its configuration.
pub struct TextTokenizer {
    pub inner: Tokenizer,
    pub config: HfTokenizerConfig,
}

impl TextTokenizer {
    /// Reads `tokenizer.json` and (if present) `tokenizer_config.json` from a model folder.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(Error::MissingTokenizer { path: dir.into() });
        }
        let inner = Tokenizer::from_file(&path).map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        let cpath = dir.join("tokenizer_config.json");
        let config = if cpath.exists() {
            let text = std::fs::read_to_string(&cpath).map_err(|e| Error::io(&cpath, e))?;
            serde_json::from_str(&text).map_err(|e| Error::Json { path: cpath.clone(), message: e.to_string() })?
        } else {
            HfTokenizerConfig::default()
        };
        Ok(Self { inner, config })
    }

    /// Writes `tokenizer.json` and `tokenizer_config.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join("tokenizer.json");
        self.inner.save(&path, false).map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        let cpath = dir.join("tokenizer_config.json");
        let text = serde_json::to_string_pretty(&self.config).expect("config serializes");
        std::fs::write(&cpath, text).map_err(|e| Error::io(&cpath, e))
    }

    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, add_special_tokens).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner.decode(ids, skip_special_tokens).map_err(|e| Error::Tokenizer(e.to_string()))
    }

    fn special_id(&self, t: &Option<SpecialToken>) -> Option<u32> {
        t.as_ref().and_then(|t| self.inner.token_to_id(t.text()))
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.special_id(&self.config.eos_token)
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.special_id(&self.config.bos_token)
    }

    /// The padding id: the pad token, else EOS, else 0.
    pub fn pad_id(&self) -> u32 {
        self.special_id(&self.config.pad_token).or(self.eos_id()).unwrap_or(0)
    }
}
