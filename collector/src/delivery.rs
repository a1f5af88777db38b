//! The limits, readiness and shutdown of the delivery path: values `config.rs` parses
//! from the flags and the receivers, the admin endpoint and `lifecycle` obey.

use std::time::Duration;

/// Limits, readiness and shutdown of the delivery path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// Most bytes of requests in flight at once.
    pub max_inflight_bytes: usize,
    /// Most requests in flight at once.
    pub max_concurrent_requests: usize,
    /// Most open connections at once, over both receivers.
    pub max_connections: usize,
    /// /readyz is false above this many spooled bytes.
    pub spool_high_water_bytes: u64,
    /// /readyz is false when nothing could be inserted for this long.
    pub write_stall_timeout: Duration,
    /// Longest a graceful shutdown keeps inserting.
    pub shutdown_timeout: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            max_inflight_bytes: 128 << 20,
            max_concurrent_requests: 256,
            max_connections: 1024,
            spool_high_water_bytes: (1 << 30) / 10 * 8,
            write_stall_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}
