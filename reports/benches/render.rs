//! Render time of a large run: `cargo bench -p distill-reports --bench render`.
//! Prints load (JSONL parse) and render times separately; no assertion (timings vary by machine).

use std::time::Instant;

use distill_reports::testdata::large_run;
use distill_reports::{load_steps, render_run};

fn main() {
    let tmp = std::env::temp_dir().join(format!("distill-bench-{}", std::process::id()));
    // (stages, trained stages, steps per trained stage): 100k logged steps spread three ways.
    for (stages, trained, steps) in [(100, 100, 1_000), (100, 10, 10_000), (100, 1, 100_000)] {
        let dir = tmp.join(format!("{trained}"));
        let run = large_run(&dir, stages, trained, steps);
        let t0 = Instant::now();
        let loaded = load_steps(&run);
        let t1 = Instant::now();
        let mut best = f64::MAX;
        let mut size = (0, 0);
        for _ in 0..5 {
            let t = Instant::now();
            let r = render_run(&run, &loaded).expect("renders");
            best = best.min(t.elapsed().as_secs_f64());
            size = (r.html.len(), r.json.len());
        }
        println!(
            "{stages} stages, {trained} x {steps} steps (6 metrics each): load {:.3} s, render {:.3} s (best of 5), html {:.2} MB, json {:.2} MB",
            (t1 - t0).as_secs_f64(), best, size.0 as f64 / 1e6, size.1 as f64 / 1e6
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
