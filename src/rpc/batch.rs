//! A JSON-RPC batch: members answered locally, from the response cache, or invalid get their answer in place; members
//! `indexing` handles (log queries, heads, sends, pinned reads) are served on their own beside the rest; the others are grouped by
//! candidate list (and write-ness), each group sent as one sub-batch concurrently, and every answer is put back in
//! request order under the client's own id. Notifications get no answer; a batch owing nothing answers nothing.
//! Provider replies are copied once: from the sub-batch bodies straight into the client's answer, ids restored on
//! the way (only a filter-creating call's reply, which is rewritten, is built apart).

use std::ops::Range;
use std::rc::Rc;

use futures_util::future::{join, join_all};

use crate::config::Chain;
use crate::error::{Attempt, RpcError};
use crate::evm::methods::{MethodClass, MethodKey};
use crate::rpc::filters;
use crate::rpc::forward::{Forwarded, Upstream, forward};
use crate::rpc::meta::Meta;
use crate::rpc::plan::{CallPlan, Transport, local_answer, plan};
use crate::rpc::reply::Reply;
use crate::rpc::reuse;
use crate::rpc::subcall::Forwarding;
use crate::rpc::target::Target;
use crate::rpc::{heads, indexing, logs_split};
use crate::shard::state::Worker;
use crate::telemetry::trace::RequestTrace;
use crate::wire::jsonrpc::{self, CallView, InvalidCall};

/// One member of a sub-batch on its way: where its answer goes, and its upstream id.
struct Member {
    index: usize,
    uid: u64,
}

/// Members sharing one candidate list, sent together.
struct Group {
    plan: CallPlan,
    members: Vec<usize>,
}

/// Where one member's answer is while the batch is put back together.
enum Slot {
    /// Nothing owed (a notification).
    Empty,
    /// Built here: an error, a local answer, a rewritten reply.
    Owned(Vec<u8>),
    /// Reply `view` of sub-batch `group`'s answer, copied (with the client's id) only when the batch is assembled.
    Upstream { group: usize, view: usize },
}

/// One sub-batch's members and what came back.
type Sent = (Vec<Member>, Result<Forwarded, RpcError>);

/// What one batch is made of: the client's body and its members.
struct Batch<'b> {
    body: &'b [u8],
    calls: Vec<Option<&'b CallView<'b>>>,
}

impl Batch<'_> {
    fn client_id(&self, range: &Option<Range<usize>>) -> &[u8] {
        range.clone().map_or(&b"null"[..], |r| &self.body[r])
    }
}

/// Answers a batch for `target`.
pub(crate) async fn batch<'b>(
    worker: &Rc<Worker>,
    target: Target,
    body: &'b [u8],
    items: &'b [Result<CallView<'b>, InvalidCall>],
    mut meta: Option<&mut Meta>,
    transport: Transport,
    trace: Option<&RequestTrace>,
) -> Reply {
    let chain = &worker.config.profiles[target.profile].chains[target.chain];
    let batch = Batch {
        body,
        calls: items.iter().map(|i| i.as_ref().ok()).collect(),
    };
    let mut slots: Vec<Slot> = (0..items.len()).map(|_| Slot::Empty).collect();
    // Members the response cache answers are answered in place; the others may fill it once answered.
    let mut kept: Vec<Option<reuse::Prepared>> = (0..items.len()).map(|_| None).collect();
    for (i, item) in items.iter().enumerate() {
        let Ok(call) = item else { continue };
        if call.is_notification() || local_answer(chain, body, call, transport).is_some() {
            continue;
        }
        let Some(prepared) = reuse::prepare(worker, target, chain, body, call) else {
            continue;
        };
        match reuse::cached(worker, &prepared).await {
            Some(answer) => slots[i] = Slot::Owned(answer.with_id(batch.client_id(&call.id))),
            None => kept[i] = Some(prepared),
        }
    }
    let mut own = Vec::new();
    let groups = group(
        worker, target, chain, &batch, items, transport, &mut slots, &mut own,
    );
    let sends = groups.iter().enumerate().map(|(g, group)| {
        // Only the first group reports its routing in the request's metadata.
        let group_meta = if g == 0 { meta.take() } else { None };
        send_group(worker, chain, &batch, group, group_meta, trace)
    });
    // Members `indexing` serves on their own (split log queries, heads, sends) go beside the sub-batches.
    let singles = own.iter().map(|&i| {
        let call = batch.calls[i].expect("members served alone are valid calls");
        let how = Forwarding {
            trace,
            stream: false,
        };
        async move {
            let served = indexing::serve(worker, target, chain, batch.body, call, None, how).await;
            served.map(|(reply, _)| reply)
        }
    });
    let (sent, served): (Vec<Sent>, Vec<Result<Vec<u8>, RpcError>>) =
        join(join_all(sends), join_all(singles)).await;
    for (&i, answer) in own.iter().zip(served) {
        let call = batch.calls[i].expect("members served alone are valid calls");
        if call.is_notification() {
            continue;
        }
        slots[i] = Slot::Owned(answer.unwrap_or_else(|e| {
            worker.count_error(e.code());
            e.to_response(batch.client_id(&call.id))
        }));
    }
    for (g, (members, result)) in sent.iter().enumerate() {
        place(worker, &batch, g, members, result, &mut slots);
        if let Ok(forwarded) = result {
            for member in members {
                let Some(prepared) = &kept[member.index] else {
                    continue;
                };
                let view = forwarded.views.iter().find(|v| {
                    jsonrpc::parse_upstream_id(&forwarded.body[v.id.clone()]) == Some(member.uid)
                });
                if let Some(view) = view {
                    let answer = reuse::answer_at(&forwarded.body, view);
                    reuse::keep(worker, prepared, &Ok(answer)).await;
                }
            }
        }
    }
    floor_heads(worker, chain, &batch, &sent, &mut slots);
    split_refused_logs(worker, target, chain, &batch, &sent, &mut slots).await;
    assemble(&batch, &slots, &sent)
}

/// `eth_getLogs` members a provider refused as too large are bisected on their own (`logs_split`).
async fn split_refused_logs(
    worker: &Rc<Worker>,
    target: Target,
    chain: &Chain,
    batch: &Batch<'_>,
    sent: &[Sent],
    slots: &mut [Slot],
) {
    let mut refused = Vec::new();
    for (i, slot) in slots.iter().enumerate() {
        let (Some(call), Slot::Upstream { group, view }) = (batch.calls[i], slot) else {
            continue;
        };
        let Some((_, Ok(forwarded))) = sent.get(*group) else {
            continue;
        };
        let view = &forwarded.views[*view];
        let object = &forwarded.body[view.span.clone()];
        if call.method == "eth_getLogs" && logs_split::refused(object) {
            let mut own = Vec::with_capacity(object.len());
            jsonrpc::restore_id(&forwarded.body, view, batch.client_id(&call.id), &mut own);
            refused.push((i, call, own));
        }
    }
    let splits = refused.into_iter().map(|(i, call, first)| async move {
        let answer = logs_split::get_logs_after(
            worker,
            target,
            chain,
            batch.body,
            call,
            None,
            None,
            Some(first),
        )
        .await;
        (i, call, answer)
    });
    for (i, call, answer) in join_all(splits).await {
        slots[i] = Slot::Owned(answer.unwrap_or_else(|e| {
            worker.count_error(e.code());
            e.to_response(batch.client_id(&call.id))
        }));
    }
}

/// `eth_blockNumber` members answered below the head clients were already shown get that head instead.
fn floor_heads(
    worker: &Worker,
    chain: &Chain,
    batch: &Batch<'_>,
    sent: &[Sent],
    slots: &mut [Slot],
) {
    for (i, slot) in slots.iter_mut().enumerate() {
        let (Some(call), Slot::Upstream { group, view }) = (batch.calls[i], &*slot) else {
            continue;
        };
        if call.method != "eth_blockNumber" {
            continue;
        }
        let Some((_, Ok(forwarded))) = sent.get(*group) else {
            continue;
        };
        let span = forwarded.views[*view].span.clone();
        let client_id = batch.client_id(&call.id);
        if let Some(fixed) = heads::floored(worker, chain, &forwarded.body[span], client_id) {
            *slot = Slot::Owned(fixed);
        }
    }
}

/// Answers invalid and local members in place, notes those `indexing` serves on their own in `own`, and groups the
/// rest by candidate list.
#[allow(clippy::too_many_arguments)]
fn group(
    worker: &Worker,
    target: Target,
    chain: &Chain,
    batch: &Batch<'_>,
    items: &[Result<CallView<'_>, InvalidCall>],
    transport: Transport,
    slots: &mut [Slot],
    own: &mut Vec<usize>,
) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if !matches!(slots[i], Slot::Empty) {
            // Answered from the cache.
            continue;
        }
        let call = match item {
            Err(invalid) => {
                worker.count_error(invalid.error.code());
                slots[i] = Slot::Owned(invalid.error.to_response(batch.client_id(&invalid.id)));
                continue;
            }
            Ok(call) => call,
        };
        let answer = match local_answer(chain, batch.body, call, transport) {
            Some(answer) => answer,
            None if indexing::serves_alone(worker, chain, batch.body, call) => {
                own.push(i);
                continue;
            }
            None => match plan(worker, target, chain, batch.body, call) {
                Ok(p) => {
                    join_group(&mut groups, p, i);
                    continue;
                }
                Err(e) => Err(e),
            },
        };
        if !call.is_notification() {
            slots[i] =
                Slot::Owned(answer.unwrap_or_else(|e| e.to_response(batch.client_id(&call.id))));
        }
    }
    groups
}

fn join_group(groups: &mut Vec<Group>, p: CallPlan, index: usize) {
    let Some(g) = groups
        .iter_mut()
        .find(|g| g.plan.candidates == p.candidates && g.plan.write == p.write)
    else {
        groups.push(Group {
            plan: p,
            members: vec![index],
        });
        return;
    };
    if g.plan.key != p.key {
        // Mixed methods: deadline and statistics follow the slowest class present.
        g.plan.key = MethodKey::of("");
        if g.plan.class != p.class {
            g.plan.class = MethodClass::Other;
        }
    }
    g.members.push(index);
}

/// Sends one group as a sub-batch (or a single call) with upstream ids.
async fn send_group(
    worker: &Rc<Worker>,
    chain: &Chain,
    batch: &Batch<'_>,
    group: &Group,
    meta: Option<&mut Meta>,
    trace: Option<&RequestTrace>,
) -> Sent {
    let members = &group.members;
    let first_uid = worker.upstream_ids(members.len() as u64);
    let mut upstream_body = Vec::new();
    let mut sent = Vec::with_capacity(members.len());
    let many = members.len() > 1;
    if many {
        upstream_body.push(b'[');
    }
    for (k, &index) in members.iter().enumerate() {
        let call = batch.calls[index].expect("grouped members are valid calls");
        if k > 0 {
            upstream_body.push(b',');
        }
        let uid = first_uid + k as u64;
        filters::write_upstream(
            &worker.config,
            chain,
            batch.body,
            call,
            uid,
            &mut upstream_body,
        );
        sent.push(Member { index, uid });
    }
    if many {
        upstream_body.push(b']');
    }
    let uids: Vec<u64> = sent.iter().map(|m| m.uid).collect();
    let upstream = Upstream {
        body: &upstream_body,
        ids: &uids,
        stream: false,
        trace,
    };
    let result = forward(worker, chain, &group.plan, upstream, meta).await;
    (sent, result)
}

/// Points each member of group `g` at its answer (or builds its error), under each client's own id.
fn place(
    worker: &Worker,
    batch: &Batch<'_>,
    g: usize,
    sent: &[Member],
    result: &Result<Forwarded, RpcError>,
    slots: &mut [Slot],
) {
    for member in sent {
        let call = batch.calls[member.index].expect("sent members are valid calls");
        if call.is_notification() {
            continue;
        }
        let client_id = batch.client_id(&call.id);
        slots[member.index] = match result {
            Ok(forwarded) => match forwarded.views.iter().position(|v| {
                jsonrpc::parse_upstream_id(&forwarded.body[v.id.clone()]) == Some(member.uid)
            }) {
                Some(view) if filters::creates_filter(&call.method) => {
                    let view = &forwarded.views[view];
                    let mut out = Vec::with_capacity(view.span.len());
                    jsonrpc::restore_id(&forwarded.body, view, client_id, &mut out);
                    Slot::Owned(filters::wrap_reply(&worker.config, forwarded.pid, out))
                }
                Some(view) => Slot::Upstream { group: g, view },
                None => Slot::Owned(
                    RpcError::AllProvidersFailed {
                        attempts: vec![Attempt {
                            provider: "(batch)".into(),
                            error: "provider omitted the reply to this call".into(),
                        }],
                    }
                    .to_response(client_id),
                ),
            },
            Err(e) => {
                worker.count_error(e.code());
                Slot::Owned(e.to_response(client_id))
            }
        };
    }
}

/// The batch reply in request order, written in one pass; nothing when only notifications were sent.
fn assemble(batch: &Batch<'_>, slots: &[Slot], sent: &[Sent]) -> Reply {
    let upstream = |i: usize, group: usize, view: usize| {
        let forwarded = sent[group].1.as_ref().expect("placed from an answer");
        let call = batch.calls[i].expect("placed members are valid calls");
        (forwarded, &forwarded.views[view], batch.client_id(&call.id))
    };
    let mut len = 0;
    let mut any = false;
    for (i, slot) in slots.iter().enumerate() {
        len += match slot {
            Slot::Empty => continue,
            Slot::Owned(answer) => answer.len(),
            &Slot::Upstream { group, view } => {
                let (_, view, client_id) = upstream(i, group, view);
                view.span.len() - view.id.len() + client_id.len()
            }
        } + 1;
        any = true;
    }
    if !any {
        return Reply::nothing();
    }
    let mut out = Vec::with_capacity(len + 1);
    out.push(b'[');
    for (i, slot) in slots.iter().enumerate() {
        match slot {
            Slot::Empty => continue,
            Slot::Owned(answer) => out.extend_from_slice(answer),
            &Slot::Upstream { group, view } => {
                let (forwarded, view, client_id) = upstream(i, group, view);
                jsonrpc::restore_id(&forwarded.body, view, client_id, &mut out);
            }
        }
        out.push(b',');
    }
    *out.last_mut().expect("at least one answer") = b']';
    Reply::answer(out)
}
