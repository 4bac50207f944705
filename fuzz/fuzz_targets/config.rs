//! Fuzzes the `deploy.toml` parser: any text is a `Config` or a `ConfigError`, never a panic;
//! and what a parsed config feeds into (application names, the checks' placeholders, how long
//! the checks make a soak last) computes without one either.

#![no_main]

use deploy_core::check::{Scope, least_soak};
use deploy_core::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse("deploy.toml", text) else {
        return;
    };
    for env in config.environments_in_order() {
        let _ = config.application_set_name(env);
        for cluster in &config.clusters {
            let app = config.application_name(env, cluster);
            let _ = env.image_names(&config.services, cluster);
            let scope = Scope {
                cluster: &cluster.name,
                region: env.pull_region(cluster),
                env: &env.name,
                app: &app,
                release: "v1",
            };
            let checks: Vec<_> = env.checks.iter().map(|c| c.resolve(&scope)).collect();
            least_soak(env.soak, &checks);
        }
    }
});
