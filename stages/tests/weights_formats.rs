//! Checkpoint formats: f16/bf16 weights, sharded safetensors with an index, corrupt files.

use std::path::Path;

use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use distill_stages::llama::{KvCache, Llama, Rope};
use distill_stages::weights::{save_safetensors, Weights};
use half::{bf16, f16};

mod support;
use support::golden;

const TINY: &str = "tiny-gqa-untied";

/// Logits of row 0 of the golden inputs, for a folder holding the tiny checkpoint.
fn logits(dir: &Path) -> Vec<f32> {
    let device = Device::flex();
    let (model, config) = Llama::from_hf_dir(dir, DType::F32, &device).unwrap();
    let ids: Vec<i64> = vec![5, 17, 99, 3, 64, 127, 0, 42];
    let t: Tensor<2, Int> = Tensor::from_data(TensorData::new(ids, [1, 8]), &device);
    model.forward(t, &[vec![true; 8]], &Rope::new(&config), &mut KvCache::new(2)).into_data().try_to_vec().unwrap()
}

fn copy_config(dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    std::fs::copy(golden(TINY).join("config.json"), dst.join("config.json")).unwrap();
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
}

#[test]
fn half_precision_checkpoints_load() {
    let reference = logits(&golden(TINY));
    let src = Weights::open_hf_dir(&golden(TINY)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for (dtype, name) in [(DType::BF16, "bf16"), (DType::F16, "f16")] {
        let mut w = Weights::new(golden(TINY));
        for (k, e) in &src.entries {
            let v: Vec<f32> = src.data(k).unwrap().try_to_vec().unwrap();
            let bytes: Vec<u8> = match dtype {
                DType::BF16 => v.iter().flat_map(|x| bf16::from_f32(*x).to_le_bytes()).collect(),
                _ => v.iter().flat_map(|x| f16::from_f32(*x).to_le_bytes()).collect(),
            };
            w.insert_bytes(k.clone(), e.shape.clone(), dtype, bytes);
        }
        let dir = tmp.path().join(name);
        copy_config(&dir);
        save_safetensors(&w, &dir.join("model.safetensors")).unwrap();
        let d = max_diff(&logits(&dir), &reference);
        assert!(d < 0.05, "{name}: {d}");
    }
}

#[test]
fn sharded_checkpoints_with_an_index_load() {
    let src = Weights::open_hf_dir(&golden(TINY)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sharded");
    copy_config(&dir);
    let mut shards = [Weights::new(&dir), Weights::new(&dir)];
    let mut map = serde_json::Map::new();
    for (i, (k, e)) in src.entries.iter().enumerate() {
        let v: Vec<f32> = src.data(k).unwrap().try_to_vec().unwrap();
        shards[i % 2].insert_f32(k.clone(), e.shape.clone(), v);
        map.insert(k.clone(), format!("model-0000{}-of-00002.safetensors", i % 2 + 1).into());
    }
    for (i, s) in shards.iter().enumerate() {
        save_safetensors(s, &dir.join(format!("model-0000{}-of-00002.safetensors", i + 1))).unwrap();
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    assert_eq!(logits(&dir), logits(&golden(TINY)));
}

#[test]
fn corrupt_safetensors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cut");
    copy_config(&dir);
    let bytes = std::fs::read(golden(TINY).join("model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let err = Llama::from_hf_dir(&dir, DType::F32, &Device::flex()).err().unwrap().to_string();
    assert!(err.contains("cut/model.safetensors"), "{err}");
    // A header length that claims more bytes than the file has.
    std::fs::write(dir.join("model.safetensors"), u64::MAX.to_le_bytes()).unwrap();
    let err = Llama::from_hf_dir(&dir, DType::F32, &Device::flex()).err().unwrap().to_string();
    assert!(err.contains("cut/model.safetensors"), "{err}");
}

#[test]
fn a_missing_or_misshapen_tensor_is_named() {
    let src = Weights::open_hf_dir(&golden(TINY)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bad");
    copy_config(&dir);
    let mut w = Weights::new(&dir);
    for (k, e) in &src.entries {
        let v: Vec<f32> = src.data(k).unwrap().try_to_vec().unwrap();
        if k == "model.layers.1.mlp.up_proj.weight" {
            continue;
        }
        w.insert_f32(k.clone(), e.shape.clone(), v);
    }
    save_safetensors(&w, &dir.join("model.safetensors")).unwrap();
    let err = Llama::from_hf_dir(&dir, DType::F32, &Device::flex()).err().unwrap().to_string();
    assert!(err.contains("model.layers.1.mlp.up_proj.weight"), "{err}");
    w.insert_f32("model.layers.1.mlp.up_proj.weight".into(), vec![64, 31], vec![0.0; 64 * 31]);
    save_safetensors(&w, &dir.join("model.safetensors")).unwrap();
    let err = Llama::from_hf_dir(&dir, DType::F32, &Device::flex()).err().unwrap().to_string();
    assert!(err.contains("up_proj.weight") && err.contains("[64, 31]") && err.contains("[64, 32]"), "{err}");
}
