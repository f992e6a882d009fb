//! The runtime a function's binary runs on: tokio's multi-threaded one, left
//! at exit without waiting for blocking work nobody waits for any more.
//!
//! `#[tokio::main]` drops its runtime when `main` returns, and dropping it
//! waits for every `spawn_blocking` task to return: a librdkafka metadata
//! request to a broker that does not answer (up to 10 s), whose caller a
//! stop had already dropped, held the exit (process's SIGTERM took 5.1 s in
//! the image check with Kafka unreachable). Whatever a function must finish
//! its `run` finishes before returning (the last commit, the producer's
//! flush, the requests in flight), so what is still running after it is
//! abandoned work: it gets [`ABANDON_AFTER`], then the process exits.

use std::future::Future;
use std::time::Duration;

/// How long blocking work still running after `main`'s future is waited for.
pub const ABANDON_AFTER: Duration = Duration::from_millis(250);

/// Run `main` on a new multi-threaded runtime (what `#[tokio::main]`
/// builds), then shut the runtime down waiting at most [`ABANDON_AFTER`].
pub fn block_on<T>(main: impl Future<Output = T>) -> std::io::Result<T> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let out = runtime.block_on(main);
    runtime.shutdown_timeout(ABANDON_AFTER);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_work_left_behind_does_not_hold_the_exit() {
        let started = std::time::Instant::now();
        let out = block_on(async {
            // A call that would block for 5 s, whose result nobody awaits.
            drop(tokio::task::spawn_blocking(|| {
                std::thread::sleep(Duration::from_secs(5))
            }));
            7
        })
        .expect("runtime");
        assert_eq!(out, 7);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the exit waited {:?}",
            started.elapsed()
        );
    }
}
