//! Runtimes for the process's threads: each worker, the monitor and the cluster poller run their futures on a monoio
//! runtime of their own thread.

/// Stack of worker and monitor threads: JSON validation recurses per nesting level (bounded by
/// `jsonrpc::MAX_REPLY_DEPTH`); the memory is reserved, and only the pages used are committed.
pub const WORKER_STACK_BYTES: usize = 64 << 20;

/// Submission queue entries of each thread's ring.
const RING_ENTRIES: u32 = 1024;

/// The ring's set-up flags: one thread creates, submits to and reaps its ring (`SINGLE_ISSUER`), and the kernel runs
/// completion work when that thread enters the ring to wait (`DEFER_TASKRUN`) instead of interrupting it with
/// task-work signals and IPIs after every completion (`COOP_TASKRUN` for kernels without `DEFER_TASKRUN`).
fn tuned_ring() -> io_uring::Builder {
    let mut b = io_uring::IoUring::builder();
    b.setup_coop_taskrun()
        .setup_single_issuer()
        .setup_defer_taskrun();
    b
}

/// Runs `fut` to completion on a fresh monoio runtime of this thread: io_uring when available (with the tuned
/// set-up flags, or without them on kernels older than 6.1 or with `LASSO_RING_FLAGS=plain`), else epoll. The ring
/// is built and driven on this thread only, as `SINGLE_ISSUER` requires.
pub fn block_on<F: std::future::Future>(uring: bool, fut: F) -> F::Output {
    if uring {
        let plain = crate::config::env::plain_ring(&crate::config::env::process);
        let tuned = if plain {
            Err(std::io::Error::other("LASSO_RING_FLAGS=plain"))
        } else {
            monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .with_entries(RING_ENTRIES)
                .uring_builder(tuned_ring())
                .enable_timer()
                .build()
        };
        let built = tuned.or_else(|e| {
            tracing::debug!(error = %e, "io_uring set-up flags refused; using a plain ring");
            monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .with_entries(RING_ENTRIES)
                .enable_timer()
                .build()
        });
        match built {
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
