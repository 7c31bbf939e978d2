//! How many instance slots the pooling allocator gets on this machine.
//!
//! The pool reserves its address space up front: every memory slot is a
//! 4 GiB reservation plus guard pages (that is what lets compiled code skip
//! bounds checks), so 100 slots of two memories reserve about 800 GiB of
//! address space. That costs no memory on a 64-bit server, but a box with
//! a 39-bit address space (512 GiB, common on ARM boards), a `ulimit -v`,
//! or little RAM cannot back it, and a runtime that insists fails to start
//! (wasmCloud #1961). So the slots are the smallest of:
//!
//! - what the configuration asks for (the steps that run at once, with
//!   room to spare),
//! - what the memory can back: [`SLOT_MEMORY`] per slot, of the machine's
//!   memory or the cgroup's limit, whichever is smaller,
//! - what fits in half the address space left to the process (its
//!   `RLIMIT_AS`, or the size of the user address space).
//!
//! Fewer slots than steps may run at once (`needed_instances`, at least
//! [`MIN_SLOTS`]) would make steps fail for want of a slot, so then the
//! engine allocates on demand instead; if reserving still fails,
//! [`super::Engine::new`] falls back to on-demand allocation too.

use super::EngineOptions;
use plait_types::machine::Machine;

/// The memory one busy slot needs at least: a small step's memory, stack
/// and instance state.
pub(super) const SLOT_MEMORY: u64 = 16 << 20;

/// The address space one slot reserves: two memories of 4 GiB plus a
/// 32 MiB guard each, an async stack and its tables.
pub(super) const SLOT_ADDRESS_SPACE: u64 = 2 * ((4 << 30) + (32 << 20)) + (4 << 20);

/// Fewer slots than this and the engine allocates on demand instead.
pub(super) const MIN_SLOTS: u32 = 4;

/// The slots chosen, and what chose them (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Slots {
    /// Component instances; 0: allocate on demand.
    pub instances: u32,
    /// What limited them.
    pub why: &'static str,
}

/// The slots for `options` on `machine`.
pub(super) fn slots(options: &EngineOptions, machine: &Machine) -> Slots {
    let mut slots = Slots {
        instances: options.max_instances,
        why: "as configured",
    };
    if let Some(memory) = machine.memory {
        let fit = u32::try_from(memory / SLOT_MEMORY).unwrap_or(u32::MAX);
        if fit < slots.instances {
            slots = Slots {
                instances: fit,
                why: "the machine's memory",
            };
        }
    }
    if let Some(space) = machine.address_space {
        let fit = u32::try_from(space / 2 / SLOT_ADDRESS_SPACE).unwrap_or(u32::MAX);
        if fit < slots.instances {
            slots = Slots {
                instances: fit,
                why: "the address space",
            };
        }
    }
    if slots.instances < options.needed_instances.max(MIN_SLOTS) {
        // Too few for the steps that may run at once: on demand, and `why`
        // says what did not fit.
        slots.instances = 0;
    }
    slots
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn options(max_instances: u32) -> EngineOptions {
        EngineOptions {
            max_instances,
            ..EngineOptions::default()
        }
    }

    #[test]
    fn a_large_machine_gets_what_is_configured() {
        let machine = Machine {
            memory: Some(24 * GIB),
            address_space: Some(1 << 47),
        };
        let slots = slots(&options(100), &machine);
        assert_eq!(slots.instances, 100);
        assert_eq!(slots.why, "as configured");
    }

    #[test]
    fn a_small_memory_limit_gets_fewer_slots() {
        let machine = Machine {
            memory: Some(256 << 20),
            address_space: Some(1 << 47),
        };
        let slots = slots(&options(100), &machine);
        assert_eq!(slots.instances, 16);
        assert_eq!(slots.why, "the machine's memory");
    }

    #[test]
    fn a_39_bit_address_space_bounds_the_pool() {
        let machine = Machine {
            memory: Some(8 * GIB),
            address_space: Some(1 << 39),
        };
        let slots = slots(&options(100), &machine);
        // 256 GiB of the 512 GiB, at about 8 GiB a slot.
        assert_eq!(slots.instances, 31);
        assert_eq!(slots.why, "the address space");
        assert!(u64::from(slots.instances) * SLOT_ADDRESS_SPACE <= (1 << 39) / 2);
    }

    #[test]
    fn a_tight_ulimit_means_on_demand() {
        let machine = Machine {
            memory: Some(8 * GIB),
            address_space: Some(16 * GIB),
        };
        assert_eq!(slots(&options(100), &machine).instances, 0);
    }

    #[test]
    fn unknown_machines_get_the_configuration() {
        assert_eq!(slots(&options(7), &Machine::default()).instances, 7);
    }

    #[test]
    fn too_few_slots_for_the_concurrency_means_on_demand() {
        let machine = Machine {
            memory: Some(256 << 20),
            address_space: None,
        };
        let busy = EngineOptions {
            needed_instances: 20,
            ..options(100)
        };
        assert_eq!(slots(&busy, &machine).instances, 0);
    }
}
