//! The training losses, on f32 logits: masked cross entropy, KL to the teacher (both directions,
//! both reductions, with temperature) and DPO. Checked against `tests/golden/make_loss_golden.py`.

mod ce;
mod dpo;
mod kl;

pub use ce::{cross_entropy, token_logps};
pub use dpo::{dpo_loss, sequence_logps, DpoOutput};
pub use kl::{kl_divergence, KlDirection, KlOptions, KlReduction};

#[cfg(test)]
pub(crate) mod golden {
    //! Reads `tests/golden/losses.json` (regenerate with `make_loss_golden.py`).
    use burn::tensor::{Device, Int, Tensor, TensorData};

    pub fn json() -> serde_json::Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/golden/losses.json");
        serde_json::from_str(&std::fs::read_to_string(path).expect("losses.json")).expect("json")
    }

    pub fn floats(v: &serde_json::Value) -> Vec<f32> {
        v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
    }

    pub fn tensor3(v: &serde_json::Value, shape: [usize; 3]) -> Tensor<3> {
        Tensor::from_data(TensorData::new(floats(v), shape), &Device::flex())
    }

    pub fn tensor2(v: &serde_json::Value, shape: [usize; 2]) -> Tensor<2> {
        Tensor::from_data(TensorData::new(floats(v), shape), &Device::flex())
    }

    pub fn ints(v: &serde_json::Value, shape: [usize; 2]) -> Tensor<2, Int> {
        let ids: Vec<i64> = v.as_array().expect("array").iter().map(|x| x.as_i64().expect("int")).collect();
        Tensor::from_data(TensorData::new(ids, shape), &Device::flex())
    }

    pub fn scalar(t: Tensor<1>) -> f64 {
        t.into_data().try_to_vec::<f32>().expect("f32")[0] as f64
    }

    pub fn close(got: f64, want: f64, what: &str) {
        assert!((got - want).abs() <= 1e-5 * want.abs().max(1.0), "{what}: got {got}, want {want}");
    }
}
