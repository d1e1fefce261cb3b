//! `GET /api/events/:profile`: the server-sent event stream of one profile's routing decisions, on a connection
//! handed over after its request head. A slow reader loses events (the bus is lossy), never memory; a reader that
//! takes nothing for `server.send_timeout_ms` is closed, and every stream ends after `server.event_stream_lifetime_ms`
//! (EventSource clients reconnect on their own), so idle streams cannot hold their places for ever.

use std::rc::Rc;
use std::sync::atomic::Ordering;

use futures_channel::oneshot;
use futures_util::StreamExt;
use monoio::io::Splitable;
use monoio::net::TcpStream;

use crate::error::{ResourceKind, RpcError};
use crate::shard::state::Worker;
use crate::telemetry::events;
use crate::wire::http::io::{read_more, write_all, write_all_progress};
use crate::wire::http::request::RequestHead;
use crate::wire::http::response::{Response, write_head};

async fn reject(stream: &mut TcpStream, err: RpcError) {
    send_refusal(stream, Response::from(err)).await
}

async fn send_refusal(stream: &mut TcpStream, resp: Response) {
    let mut out = Vec::new();
    write_head(&mut out, &resp, false);
    out.extend_from_slice(&resp.body);
    let _ = write_all(stream, out).await;
}

/// Serves `GET /api/events/:profile` on a connection handed over after its request head: an event stream until the
/// client goes away or the worker drains.
pub async fn serve(worker: Rc<Worker>, stream: TcpStream, head: &RequestHead) {
    let name = head.path["/api/events/".len().min(head.path.len())..].trim_end_matches('/');
    stream_profile(worker, stream, name).await
}

/// Serves `GET /dashboard/api/events/:profile`: the same stream for the dashboard, behind its token or session
/// cookie (`crate::ops::dashboard`), answered without `Access-Control-Allow-Origin`.
pub async fn serve_dashboard(worker: Rc<Worker>, mut stream: TcpStream, head: &RequestHead) {
    use crate::ops::dashboard::{Access, authorize};
    match authorize(&worker, head) {
        Ok(Access::Granted) => {}
        Ok(Access::Anonymous) => {
            let refusal =
                crate::ops::error::OpsError::unauthorized("missing dashboard token or session");
            return send_refusal(&mut stream, Response::from(refusal)).await;
        }
        Err(refusal) => {
            return send_refusal(&mut stream, Response::from(refusal)).await;
        }
    }
    let prefix = "/dashboard/api/events/";
    let name = head.path[prefix.len().min(head.path.len())..].trim_end_matches('/');
    stream_profile(worker, stream, name).await
}

async fn stream_profile(worker: Rc<Worker>, mut stream: TcpStream, name: &str) {
    let Some((profile, _)) = worker.config.profile(name) else {
        return reject(
            &mut stream,
            RpcError::NotFound {
                kind: ResourceKind::Profile,
                name: name.to_string(),
            },
        )
        .await;
    };
    if worker.draining.get() {
        return reject(&mut stream, RpcError::Overloaded("server is draining")).await;
    }
    let Some((registration, mut rx, queued)) =
        events::register(&worker.config.profiles[profile].name)
    else {
        return reject(&mut stream, RpcError::Overloaded("too many event streams")).await;
    };
    let head_bytes = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
         X-Accel-Buffering: no\r\nConnection: close\r\n\r\n\
         : subscribed profile={name}\n\n"
    );
    let settings = &worker.config.server;
    let lifetime = monoio::time::sleep(settings.event_stream_lifetime);
    futures_util::pin_mut!(lifetime);
    let (mut rd, mut wr) = stream.into_split();
    if write_all(&mut wr, head_bytes.into_bytes()).await.0.is_err() {
        return;
    }
    // The client sends nothing more; a read returning tells that it went away. The reader stops (releasing its half
    // of the socket) when this function returns and drops `_stop`.
    let (closed_tx, mut closed_rx) = oneshot::channel::<()>();
    let (_stop, mut stop_rx) = oneshot::channel::<()>();
    monoio::spawn(async move {
        let mut buf = Vec::with_capacity(512);
        loop {
            let read = read_more(&mut rd, std::mem::take(&mut buf), 512);
            let (res, mut b) = monoio::select! {
                r = read => r,
                _ = &mut stop_rx => return,
            };
            match res {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    b.clear();
                    buf = b;
                }
            }
        }
        let _ = closed_tx.send(());
    });
    loop {
        if worker.draining.get() {
            break;
        }
        let drained = worker.drain_started.notified();
        let out = monoio::select! {
            ev = rx.next() => match ev {
                Some(chunk) => {
                    // Chunks of ready `data:` frames, one per worker flush; whatever else is queued goes along.
                    queued.fetch_sub(chunk.len(), Ordering::Relaxed);
                    let mut out = String::from(&*chunk);
                    while let Ok(more) = rx.try_recv() {
                        queued.fetch_sub(more.len(), Ordering::Relaxed);
                        out.push_str(&more);
                    }
                    out
                }
                None => break,
            },
            _ = monoio::time::sleep(events::KEEPALIVE) => ": keep-alive\n\n".to_string(),
            _ = &mut closed_rx => break,
            _ = drained => break,
            _ = &mut lifetime => break,
        };
        // A reader that takes nothing for the send timeout is gone (nginx's send_timeout).
        if write_all_progress(&mut wr, out.into_bytes(), settings.send_timeout)
            .await
            .0
            .is_err()
        {
            break;
        }
    }
    drop(registration);
}
