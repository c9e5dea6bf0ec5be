//! The `roster` binary's allocator (docs/architecture.md, "The allocator").
//!
//! With the `jemalloc` feature (the default) the binary allocates with jemalloc, built with
//! `dirty_decay_ms:0,muzzy_decay_ms:0` (`.cargo/config.toml`): pages it frees go back to the
//! system at once. glibc's malloc keeps, in each thread's arena, the holes a burst of joins
//! leaves between the records that stay, so a node's resident memory stayed near the burst's
//! peak. The library crates do not choose: an embedding application sets its own allocator.
//!
//! [`probe`] hands the server jemalloc's own figures for `/metrics`
//! (`roster_allocator_bytes{kind}`): where the resident memory goes beyond the live data.

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

/// What this process's allocator says of itself, for `/metrics`: jemalloc's figures, or none
/// with the system's malloc (which gives none).
pub fn probe() -> Option<roster_server::AllocatorProbe> {
    #[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
    {
        Some(std::sync::Arc::new(jemalloc_figures))
    }
    #[cfg(not(all(feature = "jemalloc", not(target_env = "msvc"))))]
    {
        None
    }
}

/// jemalloc's process-wide figures, bytes, as of now (`epoch` refreshes them; jemalloc's manual
/// defines each): `allocated` by the application (what the thread caches hold counts as
/// allocated), `active` in pages holding allocations (a partly used slab counts whole),
/// `resident` in pages jemalloc touched and still holds (its metadata included), `metadata`
/// of its own, `mapped` in its active extents, `retained` mapped but given back to the system,
/// and `tcache`: what the threads' caches hold (`stats.arenas.<all>.tcache_bytes`).
/// Nothing when the epoch cannot be advanced; a figure that cannot be read is left out.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
fn jemalloc_figures() -> Vec<(&'static str, u64)> {
    use tikv_jemalloc_ctl::{epoch, stats, Access, AsName};
    if let Err(e) = epoch::advance() {
        tracing::warn!(error = %e, "jemalloc's statistics could not be refreshed");
        return Vec::new();
    }
    // MALLCTL_ARENAS_ALL (4096): the sum over every arena.
    let tcache = || Access::<usize>::read(b"stats.arenas.4096.tcache_bytes\0".name());
    let figures = [
        ("allocated", stats::allocated::read()),
        ("active", stats::active::read()),
        ("resident", stats::resident::read()),
        ("metadata", stats::metadata::read()),
        ("mapped", stats::mapped::read()),
        ("retained", stats::retained::read()),
        ("tcache", tcache()),
    ];
    figures.into_iter().filter_map(|(kind, read)| Some((kind, read.ok()? as u64))).collect()
}

/// The configuration jemalloc was built with, as read back: the string ends in its NUL.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
fn built_with(conf: &str) -> &str {
    conf.trim_end_matches('\0').trim()
}

#[cfg(all(test, feature = "jemalloc", not(target_env = "msvc")))]
mod tests {
    use super::{built_with, probe};
    use tikv_jemalloc_ctl::config;

    #[test]
    fn the_probe_reads_every_figure_in_jemallocs_order() {
        let kept: Vec<u64> = (0..1000u64).map(|i| i * 3).collect();
        let figures = probe().expect("a probe with jemalloc")();
        let kinds: Vec<&str> = figures.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, ["allocated", "active", "resident", "metadata", "mapped", "retained", "tcache"]);
        let of = |kind: &str| figures.iter().find(|(k, _)| *k == kind).unwrap().1;
        assert!(of("allocated") >= (kept.len() * 8) as u64, "{figures:?}");
        assert!(of("allocated") <= of("active") && of("active") <= of("resident"), "{figures:?}");
        assert!(of("active") <= of("mapped") && of("metadata") > 0, "{figures:?}");
        assert_eq!(kept.iter().sum::<u64>(), 3 * 999 * 1000 / 2);
    }

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
