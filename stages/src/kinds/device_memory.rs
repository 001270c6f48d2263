//! In-process stages share one GPU memory pool: a stage's activations stay reserved after it
//! ends unless the pool is told to give them back. On the H200 the `draft` stage ran out of
//! memory (141 GB) after `answers`, `sft`, `pairs` and `dpo` had run in the same process, each
//! alone needing a fraction of it. Every ML kind is registered through [`ReleasesDevice`],
//! which cleans the pool when the stage ends, succeeded or not, and logs what stays held.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use distill_engine::hash::Hasher;
use distill_engine::stage::{ParamError, Stage, StageContext, StageError, StageSpec};

use crate::runtime::Runtime;

pub struct ReleasesDevice<S>(pub S);

impl<S: Stage> Stage for ReleasesDevice<S> {
    fn kind(&self) -> &'static str {
        self.0.kind()
    }
    fn version(&self) -> u32 {
        self.0.version()
    }
    fn summary(&self) -> &'static str {
        self.0.summary()
    }
    fn params_schema(&self) -> serde_json::Value {
        self.0.params_schema()
    }
    fn validate(&self, spec: &StageSpec) -> Result<(), ParamError> {
        self.0.validate(spec)
    }
    fn environment(&self, spec: &StageSpec) -> BTreeMap<String, String> {
        self.0.environment(spec)
    }
    fn external_inputs(&self, spec: &StageSpec) -> Vec<String> {
        self.0.external_inputs(spec)
    }
    fn watches_run(&self) -> bool {
        self.0.watches_run()
    }
    fn run(&self, ctx: &mut StageContext) -> Result<(), StageError> {
        let result = self.0.run(ctx);
        if ctx.spec.device != "cpu" {
            if let Ok(runtime) = Runtime::parse(&ctx.spec.device, Some(&ctx.spec.dtype)) {
                runtime.device.memory_cleanup();
                if let Some(u) = runtime.device.memory_pool_usage() {
                    let gb = |b: u64| b as f64 / 1e9;
                    ctx.log(format!("device memory after the stage: {:.2} GB in {} live allocations, {:.2} GB reserved", gb(u.bytes_in_use), u.number_allocs, gb(u.bytes_reserved)));
                }
            }
        }
        result
    }
    fn restore(&self, spec: &StageSpec, stored: &Path, hasher: &Hasher) -> Result<Vec<PathBuf>, StageError> {
        self.0.restore(spec, stored, hasher)
    }
}
