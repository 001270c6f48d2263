//! GGUF import end to end on a tiny file built from a golden checkpoint: the exported Hugging
//! Face folder reproduces transformers' logits, and bad files fail with errors that name the file
//! and the tensor.

use std::path::{Path, PathBuf};

use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use distill_stages::gguf::Gguf;
use distill_stages::llama::{KvCache, Llama, Rope};
use distill_stages::teacher::{export_gguf, import_hf_dir};
use distill_stages::Error;

mod support;
use support::{golden, tiny_gguf};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn gguf_export_reproduces_transformers_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write(tmp.path(), "tiny.gguf", &tiny_gguf(64, true));
    let out = tmp.path().join("hf");
    export_gguf(&path, &out).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        assert!(out.join(f).exists(), "{f}");
    }
    let device = Device::flex();
    let (model, config) = Llama::from_hf_dir(&out, DType::F32, &device).unwrap();
    assert!(!config.tie_embeddings);
    // Golden row 0 (no padding): the first 12 ids and transformers' logits.
    let st_bytes = std::fs::read(golden("tiny-gqa-untied").join("golden.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&st_bytes).unwrap();
    let ids: Vec<i64> = st.tensor("input_ids").unwrap().data().chunks_exact(8).take(12).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    let want: Vec<f32> = st.tensor("logits").unwrap().data().chunks_exact(4).take(12 * 128).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let t: Tensor<2, Int> = Tensor::from_data(TensorData::new(ids, [1, 12]), &device);
    let got: Vec<f32> = model.forward(t, &[vec![true; 12]], &Rope::new(&config), &mut KvCache::new(2)).into_data().try_to_vec().unwrap();
    let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-4, "max diff {worst}");
    // The exported folder is itself a valid hf_dir source.
    import_hf_dir(&out, &tmp.path().join("again")).unwrap();
}

#[test]
fn shape_that_does_not_match_the_config_names_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write(tmp.path(), "bad.gguf", &tiny_gguf(80, true));
    let err = export_gguf(&path, &tmp.path().join("hf")).unwrap_err().to_string();
    assert!(err.contains("bad.gguf") && err.contains("mlp.down_proj.weight") && err.contains("[32, 64]"), "{err}");
}

#[test]
fn missing_tokenizer_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write(tmp.path(), "notok.gguf", &tiny_gguf(64, false));
    let err = export_gguf(&path, &tmp.path().join("hf")).unwrap_err();
    assert!(matches!(err, Error::MissingTokenizer { .. }), "{err}");
    // A Hugging Face folder without tokenizer.json too.
    let err = import_hf_dir(&golden("tiny-gqa-untied"), &tmp.path().join("x")).unwrap_err();
    assert!(matches!(err, Error::MissingTokenizer { .. }), "{err}");
}

#[test]
fn truncated_file_names_file_and_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = tiny_gguf(64, true);
    let path = write(tmp.path(), "cut.gguf", &bytes[..bytes.len() - 4000]);
    let err = Gguf::open(&path).err().unwrap().to_string();
    assert!(err.contains("cut.gguf") && err.contains("tensor `") && err.contains("past the end"), "{err}");
    let path = write(tmp.path(), "cut2.gguf", &bytes[..100]);
    let err = Gguf::open(&path).err().unwrap().to_string();
    assert!(err.contains("cut2.gguf") && err.contains("truncated"), "{err}");
}

fn header(n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(n_tensors.to_le_bytes());
    b.extend(n_kv.to_le_bytes());
    b
}

#[test]
fn hostile_headers_fail_without_huge_allocations() {
    let tmp = tempfile::tempdir().unwrap();
    // Claims 2^63 tensors.
    let p = write(tmp.path(), "many.gguf", &header(1 << 63, 0));
    assert!(Gguf::open(&p).err().unwrap().to_string().contains("claims"));
    // A key whose length claims far more bytes than the file has.
    let mut b = header(0, 1);
    b.extend((u64::MAX / 2).to_le_bytes());
    let p = write(tmp.path(), "key.gguf", &b);
    assert!(Gguf::open(&p).err().unwrap().to_string().contains("too short"));
    // A metadata array of 2^40 strings.
    let mut b = header(0, 1);
    b.extend(1u64.to_le_bytes());
    b.push(b'k');
    b.extend(9u32.to_le_bytes());
    b.extend(8u32.to_le_bytes());
    b.extend((1u64 << 40).to_le_bytes());
    let p = write(tmp.path(), "arr.gguf", &b);
    assert!(Gguf::open(&p).err().unwrap().to_string().contains("claims"));
    // A tensor of 2^40 f32 in a tiny file.
    let mut b = header(1, 0);
    b.extend(1u64.to_le_bytes());
    b.push(b'x');
    b.extend(1u32.to_le_bytes());
    b.extend((1u64 << 40).to_le_bytes());
    b.extend(0u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    let p = write(tmp.path(), "big.gguf", &b);
    let err = Gguf::open(&p).err().unwrap().to_string();
    assert!(err.contains("tensor `x`") && err.contains("past the end"), "{err}");
}

#[test]
fn unknown_quantization_type_names_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = header(1, 0);
    b.extend(4u64.to_le_bytes());
    b.extend(b"blk0");
    b.extend(1u32.to_le_bytes());
    b.extend(32u64.to_le_bytes());
    b.extend(99u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    let p = write(tmp.path(), "q.gguf", &b);
    let err = Gguf::open(&p).err().unwrap();
    assert!(matches!(err, Error::UnknownQuant { ggml_type: 99, .. }), "{err}");
    assert!(err.to_string().contains("`blk0`"));
}
