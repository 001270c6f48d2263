//! What the trainer needs from a student or teacher: a full-sequence forward pass. Parameter
//! names for freezing come from the module tree (`names.rs`), so any burn module whose field
//! names are its checkpoint keys qualifies. The Llama implements it here; the hybrid adds its
//! own three lines.

use burn::module::Module;
use burn::tensor::{Int, Tensor};

use crate::llama::{KvCache, Llama, Rope};

pub trait TrainableLm: Module + Clone + Send + 'static {
    /// Logits for every position of right-padded or packed sequences. Padding is only ever at
    /// the end, so causal attention keeps it from touching real tokens.
    ///
    /// # Shapes
    /// - `tokens`: `[batch, seq]` -> logits `[batch, seq, vocab]`
    fn train_logits(&self, tokens: Tensor<2, Int>, rope: &Rope) -> Tensor<3>;
}

impl TrainableLm for Llama {
    fn train_logits(&self, tokens: Tensor<2, Int>, rope: &Rope) -> Tensor<3> {
        let [b, s] = tokens.dims();
        let valid = vec![vec![true; s]; b];
        self.forward(tokens, &valid, rope, &mut KvCache::new(self.model.layers.len()))
    }
}

impl TrainableLm for crate::hybrid::Hybrid {
    fn train_logits(&self, tokens: Tensor<2, Int>, rope: &Rope) -> Tensor<3> {
        use crate::lm::CausalLm;
        let [b, s] = tokens.dims();
        let valid = vec![vec![true; s]; b];
        self.forward(tokens, &valid, rope, &mut self.new_cache())
    }
}
