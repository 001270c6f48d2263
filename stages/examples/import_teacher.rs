//! Converts a llama GGUF into a Hugging Face folder:
//! `cargo run -p distill-stages --example import_teacher -- model.gguf out_dir`

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [gguf, out] = args.as_slice() else {
        return Err("usage: import_teacher MODEL.gguf OUT_DIR".into());
    };
    let config = distill_stages::teacher::export_gguf(gguf.as_ref(), out.as_ref())?;
    eprintln!("wrote {out}: {} layers, d_model {}", config.num_hidden_layers, config.hidden_size);
    Ok(())
}
