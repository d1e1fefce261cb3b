//! Name resolution off the event loop: lookups run on a short-lived helper thread and wake the worker through a
//! oneshot channel; answers are cached per worker for a TTL (failures briefly, so a bad name cannot storm threads).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(30);
const NEGATIVE_TTL: Duration = Duration::from_secs(1);

/// A resolution: the addresses, or why there are none.
type Answer = Result<Vec<SocketAddr>, String>;

/// A worker's DNS cache.
#[derive(Default)]
pub struct DnsCache {
    entries: HashMap<(String, u16), (Answer, Instant)>,
}

impl DnsCache {
    fn cached(&self, host: &str, port: u16) -> Option<Answer> {
        let (answer, expires) = self.entries.get(&(host.to_string(), port))?;
        (Instant::now() < *expires).then(|| answer.clone())
    }

    fn store(&mut self, host: &str, port: u16, answer: Answer) {
        let ttl = if answer.is_ok() { TTL } else { NEGATIVE_TTL };
        self.entries
            .insert((host.to_string(), port), (answer, Instant::now() + ttl));
    }
}

/// Resolves `host:port`, from the cache when fresh. IP literals need no lookup.
pub async fn resolve(
    cache: &std::cell::RefCell<DnsCache>,
    host: &str,
    port: u16,
) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    if let Some(answer) = cache.borrow().cached(host, port) {
        return answer.map_err(io::Error::other);
    }
    let (tx, rx) = futures_channel::oneshot::channel();
    let name = host.to_string();
    std::thread::Builder::new()
        .name("lasso-dns".into())
        .spawn(move || {
            let answer = (name.as_str(), port)
                .to_socket_addrs()
                .map(|addrs| addrs.collect::<Vec<_>>())
                .map_err(|e| e.to_string());
            let _ = tx.send(answer);
        })
        .map_err(io::Error::other)?;
    let answer = rx
        .await
        .map_err(|_| io::Error::other("resolver thread ended"))?;
    let answer = match answer {
        Ok(addrs) if addrs.is_empty() => Err(format!("no addresses for {host}")),
        other => other,
    };
    cache.borrow_mut().store(host, port, answer.clone());
    answer.map_err(io::Error::other)
}
