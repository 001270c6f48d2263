//! Plain text packed into fixed-length sequences: documents tokenized (with the tokenizer's
//! BOS if it adds one), joined by EOS, cut into windows of `seq_len + 1` tokens (inputs and
//! shifted targets). The ragged tail is dropped.

use super::base::BadRows;
use crate::text::TextTokenizer;

/// # Shapes
/// - returns `[windows][seq_len + 1]`
pub fn pack_texts(texts: &[String], tokenizer: &TextTokenizer, seq_len: usize, bad: &mut BadRows) -> crate::Result<Vec<Vec<u32>>> {
    let mut stream = Vec::new();
    for t in texts {
        bad.seen();
        if t.trim().is_empty() {
            bad.bad("empty_text");
            continue;
        }
        stream.extend(tokenizer.encode(t, true)?);
        stream.extend(tokenizer.eos_id());
    }
    Ok(stream.chunks_exact(seq_len + 1).map(<[u32]>::to_vec).collect())
}
