//! The validated, immutable configuration every worker reads. The types live in [`schema`] (server limits, upstream
//! client settings, and the profiles -> chains -> providers tree with lookup by name, alias or chain id); loading and
//! validation in [`load`]; secret redaction in [`redact`]; provider URL parsing in [`url`]; the routing settings in
//! [`routing_policy`]; TLS files in [`tls`]; the file on disk in [`store`]; change messages in [`change`]; default
//! values in [`defaults`]; the cache section in [`cache`]; every environment variable in [`env`].

pub mod cache;
pub mod change;
pub mod defaults;
pub mod env;
pub mod load;
pub mod redact;
pub mod routing_policy;
pub mod schema;
pub mod store;
pub mod tls;
pub mod url;

pub use cache::{CachePolicy, CacheSettings, MethodPolicy, MethodRule};
pub use load::{ConfigError, load_file, load_str};
pub use routing_policy::{BreakerSettings, Strategy};
pub use schema::*;
pub use url::ProviderUrl;
