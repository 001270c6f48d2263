//! Kernel launches the GPU runtime says failed, counted so a training step can refuse to count.
//!
//! cubecl runs work lazily and reports a launch that failed (for instance on a buffer that an
//! out-of-memory allocation left "never initialized") as a warning, "An IO error happened", then
//! goes on; only reads of the buffers the failure claimed fail. A step can thus finish with some
//! of its kernels never run: at micro-batch 32 of SmolLM2's 2048-token step on the H200 it
//! reported 3x its usual throughput (BENCHMARKS.md, session 5). The binary installs [`layer`]
//! beside its log output; the trainer compares [`count`] before and after each step.

use std::sync::atomic::{AtomicU64, Ordering};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

static FAILURES: AtomicU64 = AtomicU64::new(0);

/// What cubecl's failure lines say (`cubecl_runtime::server::IoError`'s messages).
const SIGNS: [&str; 2] = ["An IO error happened", "Memory location was never initialized"];

/// Failed launches the runtime has logged in this process so far.
pub fn count() -> u64 {
    FAILURES.load(Ordering::Relaxed)
}

fn record() {
    FAILURES.fetch_add(1, Ordering::Relaxed);
}

/// A tracing layer that counts the runtime's failure warnings (they arrive through the `log`
/// bridge as events with a `message` field). It asks for warnings and worse only, so it never
/// turns on the forwarding of cubecl's debug logging.
pub fn layer<S: Subscriber + for<'a> LookupSpan<'a>>() -> impl Layer<S> {
    FailureWatch.with_filter(LevelFilter::WARN)
}

struct FailureWatch;

impl<S: Subscriber> Layer<S> for FailureWatch {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut message = Message(false);
        event.record(&mut message);
        if message.0 {
            record();
        }
    }
}

/// Whether the `message` field names a failure.
struct Message(bool);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 |= SIGNS.iter().any(|s| value.contains(s));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let text = format!("{value:?}");
            self.0 |= SIGNS.iter().any(|s| text.contains(s));
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn counts_the_runtimes_failure_warnings_and_nothing_else() {
        let subscriber = tracing_subscriber::registry().with(layer());
        let before = count();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!("An IO error happened\nCaused by:\n  couldn't find resource for that handle: Memory location was never initialized");
            tracing::warn!("device allocation of 201326592 B failed (out of device memory); reclaiming and retrying");
            tracing::info!("An IO error happened (at info: not the runtime's warning)");
        });
        // Only this layer counts, and only this thread's events reach this subscriber.
        assert_eq!(count() - before, 1);
    }
}
