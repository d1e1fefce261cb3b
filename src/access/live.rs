//! The keys of the newest running configuration, process-wide, so that sessions opened under an older generation
//! learn that their key was revoked or rotated. The supervisor [`publish`]es the key hashes of each generation it
//! starts (bumping an epoch); a WebSocket session looks at the epoch on each turn of its loop (an atomic load) and
//! takes the lock only when it moved, then closes itself if its key is no longer listed.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::schema::AccessSettings;

static EPOCH: AtomicU64 = AtomicU64::new(0);
static LIVE: Mutex<Option<HashSet<[u8; 32]>>> = Mutex::new(None);

/// Makes `access`'s keys the live ones (called by the supervisor once a generation runs).
pub fn publish(access: &AccessSettings) {
    let hashes = access.keys.iter().map(|k| k.hash).collect();
    *LIVE.lock().unwrap_or_else(|e| e.into_inner()) = Some(hashes);
    EPOCH.fetch_add(1, Ordering::Release);
}

/// The current epoch: a session starts with it, then passes it to [`revoked`].
pub fn epoch() -> u64 {
    EPOCH.load(Ordering::Acquire)
}

/// True when keys were published since `seen` and `hash` is not among them; updates `seen`.
pub fn revoked(seen: &mut u64, hash: &[u8; 32]) -> bool {
    let now = EPOCH.load(Ordering::Acquire);
    if now == *seen {
        return false;
    }
    *seen = now;
    LIVE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .is_some_and(|live| !live.contains(hash))
}
