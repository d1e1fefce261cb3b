//! Runtimes for the process's threads: each worker, the monitor and the cluster poller run their futures on a monoio
//! runtime of their own thread.

/// Stack of worker and monitor threads: JSON validation recurses per nesting level (bounded by
/// `jsonrpc::MAX_REPLY_DEPTH`); the memory is reserved, and only the pages used are committed.
pub const WORKER_STACK_BYTES: usize = 64 << 20;

/// Runs `fut` to completion on a fresh monoio runtime of this thread: io_uring when available, else epoll.
pub fn block_on<F: std::future::Future>(uring: bool, fut: F) -> F::Output {
    if uring {
        match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(1024)
            .enable_timer()
            .build()
        {
            Ok(mut rt) => return rt.block_on(fut),
            Err(e) => {
                tracing::warn!(error = %e, "io_uring runtime failed; using the legacy driver")
            }
        }
    }
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("the legacy driver always builds")
        .block_on(fut)
}
