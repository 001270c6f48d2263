//! Chat templates: Hugging Face's Jinja templates rendered with minijinja (with Python string
//! methods, as transformers' sandboxed Jinja allows them).

use minijinja::{context, Environment, Error as JinjaError, ErrorKind};
use serde::{Deserialize, Serialize};

use super::tokenizer::TextTokenizer;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn user(content: impl Into<String>) -> Self {
        Self { role: "user".into(), content: content.into() }
    }
}

/// Renders `messages` with `template`, as `tokenizer.apply_chat_template(messages,
/// tokenize=False, add_generation_prompt=...)` does.
pub fn render(template: &str, messages: &[Message], add_generation_prompt: bool, bos: &str, eos: &str) -> Result<String> {
    let mut env = Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.add_function("raise_exception", |msg: String| -> Result<String, JinjaError> {
        Err(JinjaError::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_template("chat", template).map_err(|e| Error::Template(e.to_string()))?;
    let tmpl = env.get_template("chat").map_err(|e| Error::Template(e.to_string()))?;
    tmpl.render(context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => bos,
        eos_token => eos,
    })
    .map_err(|e| Error::Template(e.to_string()))
}

impl TextTokenizer {
    /// Renders the folder's chat template; an error if the folder has none.
    pub fn apply_chat_template(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let template = self.config.chat_template.as_deref().ok_or_else(|| Error::Template("the tokenizer has no chat_template".into()))?;
        let text = |t: &Option<super::tokenizer::SpecialToken>| t.as_ref().map(|t| t.text().to_string()).unwrap_or_default();
        render(template, messages, add_generation_prompt, &text(&self.config.bos_token), &text(&self.config.eos_token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_chatml_with_generation_prompt() {
        let out = render(CHATML, &[Message::user("Hi")], true, "", "").unwrap();
        assert_eq!(out, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
        let out = render(CHATML, &[Message::user("Hi")], false, "", "").unwrap();
        assert_eq!(out, "<|im_start|>user\nHi<|im_end|>\n");
    }

    #[test]
    fn python_string_methods_and_raise_exception() {
        let t = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('bad') }}{% endif %}{{ messages[0]['content'].strip() }}";
        assert_eq!(render(t, &[Message::user("  x ")], false, "", "").unwrap(), "x");
        let sys = Message { role: "system".into(), content: "s".into() };
        assert!(render(t, &[sys], false, "", "").unwrap_err().to_string().contains("bad"));
    }
}
