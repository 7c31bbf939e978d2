//! What this machine offers a process: memory (the machine's, or its
//! cgroup's limit if smaller) and address space (`RLIMIT_AS`, or the user
//! address space), read from Linux `/proc` and `/sys/fs/cgroup`.

/// What the machine offers the process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Machine {
    /// Bytes of memory: the smaller of the machine's and the cgroup's
    /// limit; `None` if unknown.
    pub memory: Option<u64>,
    /// Bytes of address space the process may map; `None` if unknown.
    pub address_space: Option<u64>,
}

impl Machine {
    /// Reads this machine (Linux `/proc` and `/sys/fs/cgroup`; elsewhere
    /// nothing is known and the configuration decides).
    pub fn read() -> Machine {
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

/// This machine's memory, or its cgroup's limit if smaller; `None` where
/// it cannot be read.
pub fn memory() -> Option<u64> {
    Machine::read().memory
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
