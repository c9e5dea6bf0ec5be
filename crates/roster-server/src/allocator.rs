//! The `roster` binary's allocator (docs/architecture.md, "The allocator").
//!
//! With the `jemalloc` feature (the default) the binary allocates with jemalloc, built with
//! `dirty_decay_ms:0,muzzy_decay_ms:0` (`.cargo/config.toml`): pages it frees go back to the
//! system at once. glibc's malloc keeps, in each thread's arena, the holes a burst of joins
//! leaves between the records that stay, so a node's resident memory stayed near the burst's
//! peak. The library crates do not choose: an embedding application sets its own allocator.

#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// What this process allocates with, for the startup log.
pub fn describe() -> String {
    #[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
    {
        match tikv_jemalloc_ctl::config::malloc_conf::read() {
            Ok(conf) => format!("jemalloc (built with \"{}\"; _RJEM_MALLOC_CONF overrides it)", built_with(conf)),
            Err(e) => format!("jemalloc (its configuration could not be read: {e})"),
        }
    }
    #[cfg(not(all(feature = "jemalloc", not(target_env = "msvc"))))]
    {
        "the system's malloc".to_owned()
    }
}

/// The configuration jemalloc was built with, as read back: the string ends in its NUL.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
fn built_with(conf: &str) -> &str {
    conf.trim_end_matches('\0').trim()
}

#[cfg(all(test, feature = "jemalloc", not(target_env = "msvc")))]
mod tests {
    use super::built_with;
    use tikv_jemalloc_ctl::config;

    #[test]
    fn the_binary_is_built_to_give_freed_pages_back_at_once() {
        assert_eq!(built_with(config::malloc_conf::read().unwrap()), "dirty_decay_ms:0,muzzy_decay_ms:0");
    }

    /// This process's resident memory, from `/proc/self/status`.
    #[cfg(target_os = "linux")]
    fn resident_bytes() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        let kb: usize = line.trim_start_matches("VmRSS:").trim().trim_end_matches("kB").trim().parse().unwrap();
        kb * 1024
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn freed_blocks_leave_the_resident_memory_at_once() {
        // 1 MiB blocks: below jemalloc's `oversize_threshold` (8 MiB), whose blocks it gives
        // back at once whatever the decay, and above what a thread's cache keeps.
        const BLOCK: usize = 1 << 20;
        const BLOCKS: usize = 64;
        let blocks: Vec<Vec<u8>> = (0..BLOCKS).map(|_| vec![1u8; BLOCK]).collect();
        let with_blocks = resident_bytes();
        assert_eq!(blocks.iter().flatten().map(|&b| usize::from(b)).sum::<usize>(), BLOCK * BLOCKS);
        drop(blocks);
        let after = resident_bytes();
        // With jemalloc's default (ten seconds of decay) the 64 MiB would still be resident
        // here; the other test of this binary allocates far less than the margin.
        assert!(
            with_blocks.saturating_sub(after) >= BLOCK * BLOCKS * 3 / 4,
            "resident {with_blocks} -> {after} bytes after freeing {BLOCKS} blocks of {BLOCK}"
        );
    }
}
