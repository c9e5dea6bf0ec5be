//! `roster serve`: run one node until it is stopped.

use anyhow::bail;
use roster_server::ServeArgs;

/// Run the node `args` describe until it is stopped (SIGINT/SIGTERM).
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let _ = args;
    bail!("`roster serve` is not built yet")
}
