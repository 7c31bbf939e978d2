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

/// The memory one busy slot needs at least: a small step's memory, stack
/// and instance state.
pub(super) const SLOT_MEMORY: u64 = 16 << 20;

/// The address space one slot reserves: two memories of 4 GiB plus a
/// 32 MiB guard each, an async stack and its tables.
pub(super) const SLOT_ADDRESS_SPACE: u64 = 2 * ((4 << 30) + (32 << 20)) + (4 << 20);

/// Fewer slots than this and the engine allocates on demand instead.
pub(super) const MIN_SLOTS: u32 = 4;

/// What the machine offers the process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Machine {
    /// Bytes of memory: the smaller of the machine's and the cgroup's
    /// limit; `None` if unknown.
    pub memory: Option<u64>,
    /// Bytes of address space the process may map; `None` if unknown.
    pub address_space: Option<u64>,
}

/// The slots chosen, and what chose them (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Slots {
    /// Component instances; 0: allocate on demand.
    pub instances: u32,
    /// What limited them.
    pub why: &'static str,
}

impl Machine {
    /// Reads this machine (Linux `/proc` and `/sys/fs/cgroup`; elsewhere
    /// nothing is known and the configuration decides).
    pub(super) fn read() -> Machine {
        let memory = [mem_total(), cgroup_memory_limit()]
            .into_iter()
            .flatten()
            .min();
        let address_space = [rlimit_address_space(), user_address_space()]
            .into_iter()
            .flatten()
            .min();
        Machine {
            memory,
            address_space,
        }
    }
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

fn mem_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The tightest memory limit of this process's cgroup and its ancestors
/// (cgroup v2 `memory.max`, or v1 `memory.limit_in_bytes`).
fn cgroup_memory_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    parse_cgroup_limit(&text, |path| std::fs::read_to_string(path).ok())
}

fn parse_cgroup_limit(cgroups: &str, read: impl Fn(&str) -> Option<String>) -> Option<u64> {
    let mut limits = Vec::new();
    for line in cgroups.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (root, file) = if id == "0" && controllers.is_empty() {
            ("/sys/fs/cgroup", "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            ("/sys/fs/cgroup/memory", "memory.limit_in_bytes")
        } else {
            continue;
        };
        // The limit that binds may be set on any ancestor.
        let mut dir = path.trim_end_matches('/').to_owned();
        loop {
            if let Some(value) = read(&format!("{root}{dir}/{file}"))
                && let Ok(bytes) = value.trim().parse::<u64>()
                // v1 writes "no limit" as a huge page-rounded number.
                && bytes < (1 << 60)
            {
                limits.push(bytes);
            }
            match dir.rfind('/') {
                Some(at) => dir.truncate(at),
                None => break,
            }
        }
    }
    limits.into_iter().min()
}

/// `ulimit -v`, from `/proc/self/limits`.
fn rlimit_address_space() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_rlimit(&text)
}

fn parse_rlimit(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max address space"))?;
    let soft = line["Max address space".len()..]
        .split_whitespace()
        .next()?;
    soft.parse().ok()
}

/// The size of the user address space, from the highest user mapping (the
/// stack sits near its top): 2^47 on most x86_64 kernels, 2^39 or 2^48 on
/// aarch64 ones.
fn user_address_space() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/maps").ok()?;
    parse_maps_top(&text)
}

fn parse_maps_top(maps: &str) -> Option<u64> {
    let top = maps
        .lines()
        .filter_map(|line| {
            let range = line.split_whitespace().next()?;
            let end = range.split('-').nth(1)?;
            u64::from_str_radix(end, 16).ok()
        })
        // Kernel mappings shown to the process ([vsyscall]) are not its own.
        .filter(|end| *end < (1 << 63))
        .max()?;
    let bits = 64 - top.saturating_sub(1).leading_zeros();
    Some(1u64 << bits)
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

    #[test]
    fn cgroup_limits_are_read_for_v1_and_v2_and_ancestors() {
        let files = |path: &str| -> Option<String> {
            match path {
                "/sys/fs/cgroup/edge/memory.max" => Some("268435456\n".into()),
                "/sys/fs/cgroup/edge/box/memory.max" => Some("max\n".into()),
                "/sys/fs/cgroup/memory/plait/memory.limit_in_bytes" => {
                    Some("9223372036854771712\n".into())
                }
                "/sys/fs/cgroup/memory/memory.limit_in_bytes" => Some("536870912\n".into()),
                _ => None,
            }
        };
        assert_eq!(parse_cgroup_limit("0::/edge/box\n", files), Some(256 << 20));
        assert_eq!(
            parse_cgroup_limit("12:cpu:/x\n7:memory:/plait\n", files),
            Some(512 << 20)
        );
        assert_eq!(parse_cgroup_limit("0::/\n", files), None);
    }

    #[test]
    fn rlimits_and_address_spaces_parse() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max address space         unlimited            unlimited            bytes\n";
        assert_eq!(parse_rlimit(limits), None);
        let limited = "Max address space         17179869184          unlimited            bytes\n";
        assert_eq!(parse_rlimit(limited), Some(16 * GIB));
        let maps = "5581f2a00000-5581f2a21000 r--p 00000000 fe:01 1 /bin/cat\n\
                    7ffd1c3d0000-7ffd1c3f1000 rw-p 00000000 00:00 0 [stack]\n\
                    ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]\n";
        assert_eq!(parse_maps_top(maps), Some(1 << 47));
        let arm = "7fb2c00000-7fb2c21000 rw-p 00000000 00:00 0 [stack]\n";
        assert_eq!(parse_maps_top(arm), Some(1 << 39));
    }

    #[test]
    fn this_machine_reads() {
        let machine = Machine::read();
        if cfg!(target_os = "linux") {
            assert!(machine.memory.is_some_and(|m| m > 16 << 20), "{machine:?}");
            assert!(machine.address_space.is_some(), "{machine:?}");
        }
    }
}
