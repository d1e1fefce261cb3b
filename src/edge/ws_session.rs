//! One client WebSocket connection: upgrade on `/ws/rpc/...` (unknown chain/profile/provider rejected with an HTTP
//! error and a JSON body), then JSON-RPC messages served like HTTP ones (same routing, breakers and failover) plus
//! `eth_subscribe`/`eth_unsubscribe`, with per-connection limits (in-flight requests, message size, subscriptions,
//! queued bytes), server pings with a pong deadline, client pings answered, an idle timeout for connections without
//! subscriptions, a lifetime for every session (close 1001 after `websocket.session_lifetime_ms`, subscribed or not),
//! close frames with proper codes, and close 1001 when the server drains. Closing the socket cancels the session's
//! request tasks and frees their in-flight slots.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_channel::mpsc;
use futures_util::StreamExt;
use futures_util::future::{Either, select};
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;

use crate::error::RpcError;
use crate::rpc::meta::MetaMode;
use crate::rpc::pipeline::Transport;
use crate::rpc::target::Target;
use crate::shard::state::Worker;
use crate::shard::sync::LocalNotify;
use crate::subscriptions::client::{ClientConn, WsBudget};
use crate::subscriptions::hub::Hub;
use crate::wire::http::io::{read_more, write_all, write_all_progress};
use crate::wire::http::request::RequestHead;
use crate::wire::http::response::{Response, write_head};
use crate::wire::jsonrpc;
use crate::wire::ws_frame::{self as frame, Assembler, Message, close};
use crate::wire::ws_handshake as handshake;

async fn reject(stream: &mut TcpStream, err: RpcError) {
    reject_response(stream, Response::from(err)).await
}

async fn reject_response(stream: &mut TcpStream, resp: Response) {
    let mut out = Vec::new();
    write_head(&mut out, &resp, false);
    out.extend_from_slice(&resp.body);
    let _ = write_all(stream, out).await;
}

/// Answers an upgrade request whose head is `buf[..head.head_len]`; serves the WebSocket session on success.
pub async fn upgrade(
    worker: Rc<Worker>,
    hub: Rc<Hub>,
    mut stream: TcpStream,
    mut buf: Vec<u8>,
    head: &RequestHead,
) {
    let target = match crate::rpc::target::resolve(&worker.config, &head.path, "/ws/rpc") {
        Ok(t) => t,
        Err(e) => return reject(&mut stream, e).await,
    };
    let upgrade = match handshake::validate_request(&buf[..head.head_len]) {
        Ok(u) => u,
        Err(why) => {
            return reject(
                &mut stream,
                RpcError::InvalidRequest(format!("WebSocket upgrade: {why}")),
            )
            .await;
        }
    };
    if head.origin.is_some()
        && worker
            .config
            .server
            .cors
            .allow(head.origin.as_deref())
            .is_none()
    {
        // Browsers send `Origin` and do not apply CORS to WebSockets: the server refuses foreign pages itself.
        return reject(&mut stream, RpcError::OriginNotAllowed).await;
    }
    let key = match crate::access::gate::check(
        &worker.config,
        worker.shared.workers,
        (target.profile, target.chain),
        head,
        None,
        None,
        &[],
    ) {
        Ok(key) => key.map(|k| k.hash),
        Err(e) => return reject_response(&mut stream, crate::access::gate::refusal(e)).await,
    };
    if worker.draining.get() {
        return reject(&mut stream, RpcError::Overloaded("server is draining")).await;
    }
    if write_all(&mut stream, handshake::accept_response(&upgrade))
        .await
        .0
        .is_err()
    {
        return;
    }
    buf.drain(..head.head_len);
    buf.shrink_to_fit();
    serve(worker, hub, stream, buf, target, key).await;
}

fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut out = Vec::new();
    frame::encode(
        &mut out,
        frame::OP_CLOSE,
        &frame::close_payload(code, reason),
        None,
    );
    out
}

/// Reads once into a fresh buffer, owning the read half for the duration (so the read can outlive timer wake-ups).
async fn read_chunk<R: monoio::io::AsyncReadRent>(
    mut rd: R,
) -> (R, std::io::Result<usize>, Vec<u8>) {
    let (res, data) = read_more(&mut rd, Vec::with_capacity(4096), 4096).await;
    (rd, res, data)
}

/// Writes queued frames until the queue closes; gives the write half back (the session may still owe a close frame).
/// A write the client does not take within `send_timeout` (`server.send_timeout_ms`, nginx's `send_timeout`), or any
/// write once `abort` fires, ends the writer.
async fn writer<W: AsyncWriteRent>(
    mut wr: W,
    send_timeout: Duration,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    queued: Rc<Cell<usize>>,
    budget: Rc<WsBudget>,
    progress: Rc<Cell<Instant>>,
    abort: Rc<LocalNotify>,
) -> Option<W> {
    while let Some(framed) = rx.next().await {
        let len = framed.len();
        let aborted = abort.notified();
        // A large frame taken slowly but steadily is written; one write taking nothing for the timeout ends it.
        let write = write_all_progress(&mut wr, framed, send_timeout);
        let res = match select(Box::pin(write), Box::pin(aborted)).await {
            Either::Left(((res, _), _)) => res,
            Either::Right(_) => return None,
        };
        queued.set(queued.get().saturating_sub(len));
        budget.written(len);
        progress.set(Instant::now());
        if res.is_err() {
            return None;
        }
    }
    Some(wr)
}

/// Serves WebSocket frames until the connection closes.
async fn serve(
    worker: Rc<Worker>,
    hub: Rc<Hub>,
    stream: TcpStream,
    mut buf: Vec<u8>,
    target: Target,
    key: Option<[u8; 32]>,
) {
    let settings = worker.config.websocket.clone();
    let mut keys_seen = crate::access::live::epoch();
    let (rd, wr) = stream.into_split();
    let mut rd = Some(rd);
    let (tx, rx) = mpsc::unbounded();
    let queued = Rc::new(Cell::new(0usize));
    let conn_id = worker.next_connection_id();
    let budget = hub.ws_budget.clone();
    let client = Rc::new(ClientConn::new(
        conn_id,
        tx,
        queued.clone(),
        settings.max_queued_bytes,
        budget.clone(),
    ));
    budget.client_opened();
    let progress = Rc::new(Cell::new(Instant::now()));
    let abort_writer = Rc::new(LocalNotify::default());
    let writer = monoio::spawn(writer(
        wr,
        worker.config.server.send_timeout,
        rx,
        queued.clone(),
        budget.clone(),
        progress.clone(),
        abort_writer.clone(),
    ));
    worker.ws_clients.set(worker.ws_clients.get() + 1);
    let in_flight = Rc::new(Cell::new(0usize));
    let mut assembler = Assembler::new(settings.max_message_bytes);
    let mut last_message = Instant::now();
    let ends = last_message + settings.session_lifetime;
    let mut next_ping = Instant::now() + settings.ping_interval;
    let mut pong_due: Option<Instant> = None;
    let mut reading = None;
    let close_with = |code: u16, reason: &str| {
        client.send_frame(close_frame(code, reason));
        client.close_output();
    };
    'session: loop {
        // Handle every complete frame already buffered.
        loop {
            match frame::decode(&buf, settings.max_message_bytes, true) {
                Ok(Some((f, used))) => {
                    buf.drain(..used);
                    match assembler.push(f) {
                        Ok(Some(message)) => {
                            last_message = Instant::now();
                            match message {
                                Message::Text(text) => {
                                    on_text(
                                        &worker,
                                        &hub,
                                        Scope { target, key },
                                        &client,
                                        &in_flight,
                                        settings.max_in_flight,
                                        text,
                                    );
                                }
                                // web3.py (and other clients) send JSON-RPC in binary frames; geth and anvil
                                // serve them like text, and so does Lasso (answers go out as text frames).
                                Message::Binary(data) => {
                                    if std::str::from_utf8(&data).is_err() {
                                        close_with(
                                            close::INVALID_PAYLOAD,
                                            "binary message is not UTF-8 JSON",
                                        );
                                        break 'session;
                                    }
                                    on_text(
                                        &worker,
                                        &hub,
                                        Scope { target, key },
                                        &client,
                                        &in_flight,
                                        settings.max_in_flight,
                                        data,
                                    );
                                }
                                Message::Ping(payload) => {
                                    let mut out = Vec::new();
                                    frame::encode(&mut out, frame::OP_PONG, &payload, None);
                                    client.send_frame(out);
                                }
                                Message::Pong(_) => pong_due = None,
                                Message::Close(code, _) => {
                                    let echo = match code {
                                        Some(c)
                                            if (1000..5000).contains(&c)
                                                && c != 1005
                                                && c != 1006 =>
                                        {
                                            c
                                        }
                                        _ => close::NORMAL,
                                    };
                                    close_with(echo, "");
                                    break 'session;
                                }
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            close_with(e.code, &e.reason);
                            break 'session;
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    close_with(e.code, &e.reason);
                    break 'session;
                }
            }
        }
        if client.overflowed.get() {
            // Too slow to keep up: the queue was cut; say why if the socket still takes it.
            break;
        }
        if worker.draining.get() {
            close_with(close::GOING_AWAY, "server shutting down; reconnect");
            break;
        }
        if key.is_some_and(|k| crate::access::live::revoked(&mut keys_seen, &k)) {
            close_with(close::POLICY_VIOLATION, "API key revoked");
            break;
        }
        let now = Instant::now();
        if pong_due.is_some_and(|due| now >= due) {
            // A client still taking our queued data (the ping may be behind it) is slow, not gone.
            let draining_queue =
                queued.get() > 0 && progress.get().elapsed() < settings.pong_timeout;
            if !draining_queue {
                close_with(close::POLICY_VIOLATION, "no pong within the deadline");
                break;
            }
            pong_due = Some(now + settings.pong_timeout);
        }
        if now >= next_ping {
            let mut out = Vec::new();
            frame::encode(&mut out, frame::OP_PING, b"lasso", None);
            client.send_frame(out);
            pong_due = Some(now + settings.pong_timeout);
            next_ping = now + settings.ping_interval;
        }
        if now >= ends {
            close_with(close::GOING_AWAY, "session lifetime reached; reconnect");
            break;
        }
        let idle_deadline = last_message + settings.idle_timeout;
        if now >= idle_deadline && hub.subscription_count(conn_id) == 0 && in_flight.get() == 0 {
            close_with(close::NORMAL, "idle timeout");
            break;
        }
        let wake = [Some(next_ping), pong_due, Some(idle_deadline), Some(ends)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next_ping);
        let wait = wake
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        let drained = worker.drain_started.notified();
        let timer = Box::pin(async {
            select(Box::pin(monoio::time::sleep(wait)), Box::pin(drained)).await;
        });
        // The pending read survives timer wake-ups (never cancelled), so no received byte is ever dropped.
        if reading.is_none() {
            let Some(half) = rd.take() else { break };
            reading = Some(Box::pin(read_chunk(half)));
        }
        let pending = reading.as_mut().expect("a read is pending");
        match select(pending, timer).await {
            Either::Left(((half, res, data), _)) => {
                reading = None;
                rd = Some(half);
                match res {
                    Ok(0) | Err(_) => break,
                    Ok(_) => buf.extend_from_slice(&data),
                }
            }
            Either::Right(_) => continue,
        }
    }
    drop(reading);
    // Requests still in flight on this connection stop with it (their slots and upstream calls are released).
    client.closed.notify_all();
    hub.drop_connection(conn_id);
    worker.ws_clients.set(worker.ws_clients.get() - 1);
    client.close_output();
    if client.overflowed.get() {
        // Cut as too slow: what it did not take is dropped, not flushed.
        abort_writer.notify_all();
    }
    let written = monoio::time::timeout(Duration::from_secs(5), writer).await;
    if written.is_err() {
        abort_writer.notify_all();
    }
    budget.client_closed(queued.replace(0));
    if let Ok(Some(mut wr)) = written {
        if client.overflowed.get() {
            // Cut as too slow: the queue was dropped, but the close frame still says why.
            let mut out = Vec::new();
            frame::encode(
                &mut out,
                frame::OP_CLOSE,
                &frame::close_payload(
                    close::POLICY_VIOLATION,
                    "too slow: queued data over the limit",
                ),
                None,
            );
            let _ = monoio::time::timeout(Duration::from_secs(1), wr.write_all(out)).await;
        }
        let _ = wr.shutdown().await;
    }
}

/// Serves one text message: subscriptions here, everything else through the proxy pipeline.
/// What a session's messages go to: its target, and the hash of the API key it was opened with.
#[derive(Clone, Copy)]
struct Scope {
    target: Target,
    key: Option<[u8; 32]>,
}

fn on_text(
    worker: &Rc<Worker>,
    hub: &Rc<Hub>,
    scope: Scope,
    client: &Rc<ClientConn>,
    in_flight: &Rc<Cell<usize>>,
    max: usize,
    text: Vec<u8>,
) {
    let Scope { target, key } = scope;
    // Untrusted bytes never reach the lazy parser unbounded: too deep, and the id is simply null.
    let id_of = |text: &[u8]| {
        let too_deep = jsonrpc::nesting_exceeds(text, jsonrpc::MAX_REQUEST_DEPTH);
        (!too_deep)
            .then(|| sonic_rs::get(text, ["id"]).ok())
            .flatten()
            .map(|v| v.as_raw_str().to_string())
            .unwrap_or_else(|| "null".into())
    };
    if in_flight.get() >= max {
        let err = RpcError::LimitExceeded(format!(
            "more than {max} requests in flight on this connection"
        ));
        client.send_text(&err.to_response(id_of(&text).as_bytes()));
        return;
    }
    if let Some(key) = &key {
        let workers = worker.shared.workers;
        if let Err(e) = crate::access::gate::check_message(&worker.config, workers, key, &text) {
            client.send_text(&e.to_response(id_of(&text).as_bytes()));
            return;
        }
    }
    in_flight.set(in_flight.get() + 1);
    let (worker, hub, client, in_flight) = (
        worker.clone(),
        hub.clone(),
        client.clone(),
        in_flight.clone(),
    );
    let closed = client.closed.notified();
    monoio::spawn(async move {
        // The slot is given back however the task ends, cancelled with its session included.
        struct Slot(Rc<Cell<usize>>);
        impl Drop for Slot {
            fn drop(&mut self) {
                self.0.set(self.0.get() - 1);
            }
        }
        let _slot = Slot(in_flight);
        let work = Box::pin(async {
            let used = key.and_then(|h| worker.config.access.keys.iter().find(|k| k.hash == h));
            // With `access.redis_url`, the key's request rate shared by every node (fail-open).
            if let Some(k) = used.filter(|_| worker.config.access.redis.is_some()) {
                if let Err(e) = crate::access::gate::check_shared(&worker.config, k, &text).await {
                    client.send_text(&e.to_response(id_of(&text).as_bytes()));
                    return;
                }
            }
            if let Some(reply) = subscription_call(&worker, &hub, target, &client, &text).await {
                client.send_text(&reply);
            } else {
                let resp = crate::rpc::pipeline::handle(
                    &worker,
                    target,
                    text.as_slice().into(),
                    MetaMode::Off,
                    Transport::WebSocket,
                    None,
                    used.map(|k| k.id.as_str()),
                )
                .await;
                if let Some(k) = used {
                    let (p, c) = (target.profile, target.chain);
                    let methods = crate::access::gate::methods_of(&text);
                    let (bytes_in, bytes_out) = (text.len(), resp.body.len());
                    crate::access::gate::meter(
                        &worker.config,
                        k,
                        (p, c),
                        &methods,
                        bytes_in,
                        bytes_out,
                    );
                }
                if !resp.body.is_empty() {
                    client.send_text(&resp.body);
                }
            }
        });
        select(work, Box::pin(closed)).await;
    });
}

/// Handles a single `eth_subscribe`/`eth_unsubscribe` call; `None` for anything else.
async fn subscription_call(
    worker: &Rc<Worker>,
    hub: &Rc<Hub>,
    target: Target,
    client: &Rc<ClientConn>,
    text: &[u8],
) -> Option<Vec<u8>> {
    let Ok(crate::wire::jsonrpc::RequestBody::Single(call)) =
        crate::wire::jsonrpc::parse_request(text)
    else {
        return None;
    };
    let id = call.id.clone().map_or(&b"null"[..], |r| &text[r]);
    let params = call.params.clone().map_or(&b"[]"[..], |r| &text[r]);
    match &*call.method {
        "eth_subscribe" => {
            let limit = worker.config.websocket.max_subscriptions;
            if hub.subscription_count(client.id) >= limit {
                let err = RpcError::LimitExceeded(format!(
                    "more than {limit} subscriptions on this connection"
                ));
                return Some(err.to_response(id));
            }
            Some(match hub.subscribe(worker, target, client, params).await {
                Ok(sub_id) => {
                    crate::wire::jsonrpc::result_response(id, format!("\"{sub_id}\"").as_bytes())
                }
                Err(e) => e.to_response(id),
            })
        }
        "eth_unsubscribe" => {
            let sub = sonic_rs::get(params, [0])
                .ok()
                .and_then(|v| sonic_rs::JsonValueTrait::as_str(&v).map(str::to_owned));
            Some(match sub {
                Some(sub) => {
                    let found = hub.unsubscribe(client.id, &sub);
                    crate::wire::jsonrpc::result_response(
                        id,
                        if found { b"true" } else { b"false" },
                    )
                }
                None => {
                    RpcError::InvalidParams("expected [subscription id]".into()).to_response(id)
                }
            })
        }
        _ => None,
    }
}
