//! Our dequantizers against gguf-py's (llama.cpp's reference layouts) on random blocks recorded
//! in `tests/golden/dequant.json` by `tests/golden/make_llama_golden.py`.

use distill_stages::gguf::GgmlType;

#[test]
fn dequantizers_match_gguf_py() {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/dequant.json");
    let cases: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut seen = Vec::new();
    for case in cases.as_array().unwrap() {
        let name = case["type"].as_str().unwrap();
        let ty = match name {
            "Q4_0" => GgmlType::Q4_0,
            "Q4_1" => GgmlType::Q4_1,
            "Q8_0" => GgmlType::Q8_0,
            "Q4_K" => GgmlType::Q4K,
            "Q6_K" => GgmlType::Q6K,
            "F16" => GgmlType::F16,
            "BF16" => GgmlType::BF16,
            other => panic!("unexpected type {other}"),
        };
        let hex = case["bytes"].as_str().unwrap();
        let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        let want: Vec<f32> = case["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let got = ty.dequantize(&bytes);
        assert_eq!(got.len(), want.len(), "{name}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-6 + 1e-6 * w.abs(), "{name}[{i}]: ours {g}, gguf-py {w}");
        }
        seen.push(name.to_string());
    }
    assert_eq!(seen.len(), 7);
}
