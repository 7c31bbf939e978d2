//! The wasmtime side of a step's limits: a `ResourceLimiter` counting an
//! instance's memories and tables against them.

use crate::limits::{
    Limit, LimitExceeded, MAX_INSTANCES, MAX_MEMORIES, MAX_TABLE_ELEMENTS, MAX_TABLES, format_size,
};

/// Counts an instance's resources against its limits. Installed on every
/// step's `Store`; a refused growth traps with a [`LimitExceeded`].
#[derive(Debug)]
pub struct StepLimiter {
    memory_limit: u64,
    /// Bytes of linear memory currently held by all the instance's memories.
    memory_used: u64,
    /// The first limit hit, kept so the step's failure names it even if the
    /// guest handled the refused growth.
    pub exceeded: Option<LimitExceeded>,
}

impl StepLimiter {
    /// A limiter allowing `memory_limit` bytes of linear memory in total.
    pub fn new(memory_limit: u64) -> StepLimiter {
        StepLimiter {
            memory_limit,
            memory_used: 0,
            exceeded: None,
        }
    }

    fn refuse(&mut self, exceeded: LimitExceeded) -> wasmtime::Error {
        self.exceeded.get_or_insert(exceeded.clone());
        wasmtime::Error::new(exceeded)
    }
}

impl wasmtime::ResourceLimiter for StepLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grown = self.memory_used - current as u64 + desired as u64;
        if grown > self.memory_limit {
            let detail = format!(
                "the step asked for {} in total",
                format_size(grown.max(self.memory_limit + 1))
            );
            return Err(self.refuse(LimitExceeded::new(
                Limit::Memory,
                self.memory_limit,
                Some(detail),
            )));
        }
        self.memory_used = grown;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            return Err(self.refuse(LimitExceeded::new(
                Limit::Instance,
                MAX_TABLE_ELEMENTS as u64,
                Some("table elements".into()),
            )));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{MAX_INSTANCES, MAX_MEMORIES, MAX_TABLE_ELEMENTS};

    #[test]
    fn memory_is_counted_across_memories() {
        use wasmtime::ResourceLimiter as _;
        let mut limiter = StepLimiter::new(10 << 20);
        assert!(limiter.memory_growing(0, 6 << 20, None).unwrap());
        // A second memory of 5 MiB would make 11 MiB in total.
        let error = limiter.memory_growing(0, 5 << 20, None).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("memory limit 10 MiB exceeded")
        );
        assert_eq!(limiter.exceeded.as_ref().unwrap().limit, Limit::Memory);
        // Growing the first memory within the total is still fine.
        assert!(limiter.memory_growing(6 << 20, 9 << 20, None).unwrap());
    }

    #[test]
    fn tables_and_instance_counts_are_capped() {
        use wasmtime::ResourceLimiter as _;
        let mut limiter = StepLimiter::new(1 << 20);
        assert!(limiter.table_growing(0, 1000, None).unwrap());
        let error = limiter
            .table_growing(0, MAX_TABLE_ELEMENTS + 1, None)
            .unwrap_err();
        assert!(error.to_string().starts_with("instance limit"), "{error}");
        assert_eq!(limiter.instances(), MAX_INSTANCES);
        assert_eq!(limiter.memories(), MAX_MEMORIES);
    }
}
