//! Text generation on an exported tiny model: streaming pieces add up to the completion,
//! stop strings cut it, sampling is reproducible from the seed.

use distill_stages::generate::{run_generate, GenerateRequest, Sampling};
use distill_stages::teacher::export_gguf;

mod support;

fn tiny_folder() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let gguf = tmp.path().join("tiny.gguf");
    std::fs::write(&gguf, support::tiny_gguf(64, true)).unwrap();
    export_gguf(&gguf, &tmp.path().join("hf")).unwrap();
    tmp
}

#[test]
fn streams_stops_and_reproduces_from_the_seed() {
    let tmp = tiny_folder();
    let mut req = GenerateRequest::new(tmp.path().join("hf"), "the cat");
    req.max_new_tokens = 12;
    let mut streamed = String::new();
    let full = run_generate(&req, |piece| streamed.push_str(piece)).unwrap();
    assert!(!full.is_empty());
    assert!(full.starts_with(&streamed) || streamed.starts_with(&full), "{streamed:?} vs {full:?}");

    // Stop at the second character the model produces: the completion is cut before it.
    let stop: String = full.chars().nth(1).unwrap().to_string();
    req.stop = vec![stop.clone()];
    let cut = run_generate(&req, |_| {}).unwrap();
    assert!(!cut.contains(&stop) && full.starts_with(&cut), "{cut:?} from {full:?} stopping at {stop:?}");

    req.stop.clear();
    req.sampling = Sampling::TopP { p: 0.9, temperature: 1.0 };
    req.seed = 5;
    let a = run_generate(&req, |_| {}).unwrap();
    assert_eq!(a, run_generate(&req, |_| {}).unwrap());

    req.chat = true; // the tiny template renders the message content alone
    assert!(run_generate(&req, |_| {}).is_ok());
}
