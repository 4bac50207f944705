//! Bad input that must be a configuration error (exit 2) before anything is reached: an Argo
//! CD server that is not a URL, a configuration file too large to be one, checks that would
//! make a soak last longer than a day.

use crate::cli::real;
use crate::support::{DEADLINE, Sandbox, example_config};

/// The example configuration with `from` replaced by `to`, written to the sandbox's scratch.
fn variant(s: &Sandbox, name: &str, from: &str, to: &str) -> std::path::PathBuf {
    let example = std::fs::read_to_string(example_config()).expect("reading the example");
    assert!(example.contains(from), "the example has no {from:?}");
    let path = s.scratch(name);
    std::fs::write(&path, example.replacen(from, to, 1)).expect("writing the configuration");
    path
}

#[test]
fn a_bad_argo_cd_server_is_a_configuration_error() {
    let s = Sandbox::new();
    // (server, what the error says about it)
    let cases = [
        ("http://[::1", "invalid IPv6 address"),
        (
            "ftp://argocd.example.com",
            "scheme \"ftp\" is not http or https",
        ),
        ("127.0.0.1:99999", "invalid port number"),
        ("https://", "empty host"),
    ];
    for (i, (server, says)) in cases.into_iter().enumerate() {
        let in_file = variant(
            &s,
            &format!("server-{i}.toml"),
            "server = \"argocd.example.com\"",
            &format!("server = {server:?}"),
        );
        let flag = ["--argocd-server", server, "status"];
        for (config, args) in [(&in_file, &["status"][..]), (&example_config(), &flag[..])] {
            for json in [false, true] {
                let mut all: Vec<&str> = if json {
                    vec!["--output", "json"]
                } else {
                    vec![]
                };
                all.extend_from_slice(args);
                let mut cmd = real(&s, config, &all);
                cmd.env("ARGOCD_AUTH_TOKEN", "t0ken");
                let run = s.finish(cmd, &all, DEADLINE);
                run.expect_code(2);
                assert!(
                    run.stderr.contains(says) && run.stderr.contains("set [argocd].server"),
                    "{server} ({all:?}): {}",
                    run.stderr
                );
                if json {
                    assert_eq!(run.result()["exit_code"], 2, "{}", run.stdout);
                }
            }
        }
    }
}

#[test]
fn a_configuration_larger_than_a_mebibyte_is_not_read() {
    let s = Sandbox::new();
    let example = std::fs::read_to_string(example_config()).expect("reading the example");
    // A valid configuration padded with comments, just under and just over the limit.
    let padded = |total: usize| {
        let mut text = example.clone();
        while text.len() + 81 <= total {
            text.push_str(&format!("#{}\n", "x".repeat(79)));
        }
        text.push_str(&"\n".repeat(total - text.len()));
        assert_eq!(text.len(), total);
        text
    };
    let under = s.scratch("under.toml");
    std::fs::write(&under, padded(1024 * 1024)).expect("writing");
    let over = s.scratch("over.toml");
    std::fs::write(&over, padded(1024 * 1024 + 1)).expect("writing");
    let run = |config: &str| {
        let args = ["--sandbox", "--config", config, "status"];
        s.finish(s.bare(&args), &args, DEADLINE)
    };
    run(under.to_str().unwrap()).expect_code(0);
    // The file over the limit first: without the bound, /dev/zero would fill the memory.
    for config in [over.to_str().unwrap(), "/dev/zero"] {
        let refused = run(config);
        refused.expect_code(2);
        assert!(
            refused.stderr.contains(&format!(
                "the configuration {config} is larger than 1024 KiB"
            )),
            "{config}: {}",
            refused.stderr
        );
    }
    // Not text at all.
    let binary = s.scratch("binary.toml");
    std::fs::write(&binary, [0xff, 0xfe, 0x00]).expect("writing");
    let refused = run(binary.to_str().unwrap());
    refused.expect_code(2);
    assert!(
        refused.stderr.contains("it is not UTF-8 text"),
        "{}",
        refused.stderr
    );
}

#[test]
fn checks_that_would_soak_for_more_than_a_day_are_refused() {
    let s = Sandbox::new();
    // The reliability review's plan of 195,982 years, and its variants.
    let cases = [
        (
            "count = 4294967295\ninterval = \"24h\"",
            "interval is at most 1h",
        ),
        (
            "count = 4294967295\ninterval = \"1h\"",
            "count 4294967295 is more than 86400",
        ),
        (
            "count = 100\ninterval = \"1h\"",
            "initial_delay + (count - 1) × interval = 0s + 99 × 1h is 4days 3h",
        ),
    ];
    for (i, (timing, says)) in cases.into_iter().enumerate() {
        let config = variant(
            &s,
            &format!("checks-{i}.toml"),
            "interval = \"30s\"",
            timing,
        );
        let args = [
            "--sandbox",
            "--config",
            config.to_str().unwrap(),
            "plan",
            "--env",
            "prod",
        ];
        let run = s.finish(s.bare(&args), &args, DEADLINE);
        run.expect_code(2);
        assert!(run.stderr.contains(says), "{timing}: {}", run.stderr);
    }
}
