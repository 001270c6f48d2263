fn main() { println!("{}", distill_engine::VERSION); }
