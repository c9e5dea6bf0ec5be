//! The JS test harness works: npm packages installed, `phoenix` and `ws` import under Node.

mod support {
    pub mod js;
}

use std::time::Duration;
use support::js::{js_dir, run_node_script};

#[test]
fn phoenix_and_ws_npm_packages_load_under_node() {
    let (status, stdout, stderr) = run_node_script(&js_dir().join("smoke.mjs"), &[], Duration::from_secs(60));
    assert!(status.success(), "node smoke.mjs failed ({status}):\n{stderr}");
    assert_eq!(stdout, "ok\n", "stderr:\n{stderr}");
}
