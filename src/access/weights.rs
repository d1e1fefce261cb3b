//! Compute-unit weights of methods, in the spirit of providers' compute units: light reads 1, `eth_call` and state
//! reads 1.5, logs and filters 2, `debug_*`/`trace_*` 5; `access.weights` overrides any method by name.

use std::collections::HashMap;

use crate::config::defaults::{
    ACCESS_WEIGHT_CALL_STATE, ACCESS_WEIGHT_DEBUG_TRACE, ACCESS_WEIGHT_LIGHT,
    ACCESS_WEIGHT_LOGS_FILTERS,
};

const CALL_STATE: &[&str] = &[
    "eth_call",
    "eth_estimateGas",
    "eth_createAccessList",
    "eth_getBalance",
    "eth_getCode",
    "eth_getStorageAt",
    "eth_getTransactionCount",
    "eth_getProof",
];

const LOGS_FILTERS: &[&str] = &[
    "eth_getLogs",
    "eth_newFilter",
    "eth_newBlockFilter",
    "eth_newPendingTransactionFilter",
    "eth_getFilterChanges",
    "eth_getFilterLogs",
    "eth_uninstallFilter",
];

/// The weight of one call of `method`.
pub fn weight(method: &str, overrides: &HashMap<String, f64>) -> f64 {
    if let Some(w) = overrides.get(method) {
        return *w;
    }
    if method.starts_with("debug_") || method.starts_with("trace_") {
        ACCESS_WEIGHT_DEBUG_TRACE
    } else if LOGS_FILTERS.contains(&method) {
        ACCESS_WEIGHT_LOGS_FILTERS
    } else if CALL_STATE.contains(&method) {
        ACCESS_WEIGHT_CALL_STATE
    } else {
        ACCESS_WEIGHT_LIGHT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_table_and_overrides() {
        let none = HashMap::new();
        assert_eq!(weight("eth_blockNumber", &none), 1.0);
        assert_eq!(weight("eth_call", &none), 1.5);
        assert_eq!(weight("eth_getLogs", &none), 2.0);
        assert_eq!(weight("debug_traceTransaction", &none), 5.0);
        assert_eq!(weight("trace_block", &none), 5.0);
        let mut custom = HashMap::new();
        custom.insert("eth_call".to_string(), 3.0);
        assert_eq!(weight("eth_call", &custom), 3.0);
    }
}
