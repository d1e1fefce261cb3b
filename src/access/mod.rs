//! Client access: which requests may reach the pipeline. A profile listed in `access.require_key` (or every profile
//! with `require_key: true`) answers only requests that carry a configured key, as `Authorization: Bearer <key>`,
//! `X-Lasso-Key: <key>` or the query parameter `key=<key>` (WebSocket clients and wallets that take only a URL).
//! Keys are kept as SHA-256 hashes (`config::schema::ApiKey`), a presented key is hashed and compared against every
//! stored hash in constant time, and only the key's id ever appears in answers, logs or metrics.
//!
//! Keys change with the configuration (the admin API's `/api/admin/keys` edits it like any other change); the
//! supervisor publishes each generation's keys ([`live`]) so that WebSocket sessions of a revoked or rotated key
//! close themselves, while every other client keeps its connection.
//!
//! Over the keys: rate limits per key and per client address ([`limits`], weights in [`weights`]) and metering of
//! compute units per key, chain and method ([`usage`]); with `access.redis_url`, a key's request rate is also held
//! across every node through Redis ([`shared`], batches of tokens reserved ahead, fail-open).
//!
//! The edge calls [`gate::admit`] once per request, before the pipeline (HTTP) or the upgrade (WebSocket): a
//! refused request never reaches a provider. This plane sits between config and edge and imports only error, wire,
//! evm and config.

pub mod contracts;
pub mod gate;
pub mod limits;
pub mod live;
pub mod shared;
pub mod usage;
pub mod weights;
