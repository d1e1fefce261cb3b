//! The response cache's byte bound is honest: what the embedded store counts (`lasso_cache_bytes`: keys, answers and
//! a fixed overhead per entry) is what it holds on the heap, measured with a counting allocator, for small (1.5 kB,
//! a block header) and large (64 kB) answers. Prints heap bytes per cached byte
//! (`cargo test --test cache_memory -- --nocapture`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::rc::Rc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use lasso::cache::layer::{Answer, Tag};
use lasso::cache::memory::MemoryStore;

struct Counting;

static HELD: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HELD.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Fills a store with `n` answers of `size` bytes; returns (heap bytes held, bytes the store counts).
fn fill(n: usize, size: usize) -> (usize, usize) {
    let before = HELD.load(Ordering::SeqCst);
    let mut store = MemoryStore::new(usize::MAX);
    let now = Instant::now();
    for i in 0..n {
        let key = format!("\x01\0\0\0eth_getBlockByNumber\0[\"0x{i:x}\",false]");
        let body = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":0,\"result\":\"{}\"}}",
            "a".repeat(size - 36)
        );
        let answer = Answer {
            body: Rc::from(body.as_bytes()),
            id: 21..22,
        };
        let tag = Tag {
            chain: 1,
            height: i as u64,
            ttl: Duration::from_secs(60),
        };
        store.put(key.as_bytes(), answer, tag, now);
    }
    let held = (HELD.load(Ordering::SeqCst) - before) as usize;
    let counted = store.counters().bytes as usize;
    drop(store);
    (held, counted)
}

#[test]
fn counted_bytes_match_heap_bytes() {
    for (n, size) in [(20_000, 1_500), (2_000, 64 * 1024)] {
        let (held, counted) = fill(n, size);
        let ratio = held as f64 / counted as f64;
        eprintln!(
            "{n} answers of {size} B: heap {:.1} MiB, counted {:.1} MiB, {ratio:.3} heap bytes per counted byte",
            held as f64 / 1048576.0,
            counted as f64 / 1048576.0
        );
        assert!(
            (0.95..=1.05).contains(&ratio),
            "the byte bound must reflect the heap: {ratio:.3}"
        );
    }
}
