//! No secret in any output at any verbosity (issue 17 item 5, findings N5 and N11): the real
//! binary against moto (ECR, and S3 for prod's lock and trail) and the fake Argo CD, with
//! session credentials, an Argo CD token, a signed webhook whose URL holds tokens in its path
//! and query, and an Argo CD server URL with a password, runs `release check`, `promote`,
//! `watch` and `status` at trace level (`RUST_LOG=trace`, and `-vv`), and neither stream may
//! carry any of them. stderr is a file, so its logs carry no colour codes either (N13).

use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::e2e::{NEW, PROMOTE, Replication, World, json_args};
use crate::support::Run;

const SESSION_TOKEN: &str = "SessionTokenMarker-FwoGZXIvYXdzEJr";
const SECRET_KEY: &str = "SecretKeyMarker-wJalrXUtnFEMI";
const WEBHOOK_SECRET: &str = "WebhookSecretMarker-5e1f";
const PATH_TOKEN: &str = "PathTokenMarker-9c2d";
const QUERY_TOKEN: &str = "QueryTokenMarker-77ab";
const ARGOCD_PASSWORD: &str = "ArgoPasswordMarker-31x";
const WEBHOOK_VAR: &str = "DEPLOY_IT_SECRETS_WEBHOOK";

/// Every secret the runs are given, by name.
fn secrets() -> [(&'static str, &'static str); 7] {
    [
        ("AWS_SESSION_TOKEN", SESSION_TOKEN),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("ARGOCD_AUTH_TOKEN", deploy_argocd::fake::TOKEN),
        ("the webhook's signing secret", WEBHOOK_SECRET),
        ("the webhook URL's path token", PATH_TOKEN),
        ("the webhook URL's query token", QUERY_TOKEN),
        ("the Argo CD server URL's password", ARGOCD_PASSWORD),
    ]
}

/// Asserts that `run` printed none of the secrets, and no colour code on stderr (a file).
#[track_caller]
fn assert_clean(run: &Run) {
    for (what, secret) in secrets() {
        for (stream, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
            let hits = text.matches(secret).count();
            assert_eq!(
                hits, 0,
                "`deploy {}` printed {what} {hits} time(s) on {stream}",
                run.args
            );
        }
    }
    assert!(
        !run.stderr.contains('\u{1b}'),
        "`deploy {}`: colour codes in logs written to a file",
        run.args
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_print_no_secret() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    world.use_s3_state().await;
    let hooks = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&hooks)
        .await;
    let url = format!("{}/hook/{PATH_TOKEN}/x?token={QUERY_TOKEN}", hooks.uri());
    let text = std::fs::read_to_string(&world.config).unwrap();
    let soak = r#"soak = "1s""#;
    assert!(text.contains(soak), "deploy.toml no longer has {soak}");
    let notify =
        format!("{soak}\nnotify = [{{ webhook = \"{url}\", secret_env = \"{WEBHOOK_VAR}\" }}]");
    std::fs::write(&world.config, text.replacen(soak, &notify, 1)).unwrap();
    // Session credentials for every AWS call: from the environment (the default chain, for
    // staging) and from the shared credentials file (prod's `aws_profile`).
    let credentials = world.config.with_file_name("credentials-with-session");
    std::fs::write(
        &credentials,
        format!(
            "[default]\naws_access_key_id = AKIDSESSION\naws_secret_access_key = {SECRET_KEY}\n\
             aws_session_token = {SESSION_TOKEN}\n\n\
             [prod]\naws_access_key_id = AKIDSESSION\naws_secret_access_key = {SECRET_KEY}\n\
             aws_session_token = {SESSION_TOKEN}\n"
        ),
    )
    .unwrap();
    let credentials = credentials.to_str().unwrap().to_owned();
    let env = |log: &'static str| {
        vec![
            ("RUST_LOG", log),
            ("AWS_SHARED_CREDENTIALS_FILE", credentials.as_str()),
            ("AWS_ACCESS_KEY_ID", "AKIDSESSION"),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_SESSION_TOKEN", SESSION_TOKEN),
            (WEBHOOK_VAR, WEBHOOK_SECRET),
        ]
    };
    // RUST_LOG=trace and -vv (RUST_LOG unset: -vv decides).
    let trace = env("trace");
    let vv = env("");

    let check = ["release", "check", "--env", "prod", "--tag", NEW];
    let run = world.spawn_with(&json_args(&check), &trace).wait().await;
    run.expect_code(0);
    assert_clean(&run);
    // The SDK's requests were logged (at debug, the most it may say).
    assert!(
        run.stderr.contains("ECR.DescribeImages"),
        "the run logged verbosely: {}",
        run.stderr.lines().take(20).collect::<Vec<_>>().join("\n")
    );
    let mut vv_check = vec!["-vv"];
    vv_check.extend(check);
    let run = world.spawn_with(&vv_check, &vv).wait().await;
    run.expect_code(0);
    assert_clean(&run);

    let run = world.spawn_with(&json_args(&PROMOTE), &trace).wait().await;
    run.expect_code(0);
    assert_clean(&run);
    let labels: Vec<String> = run
        .lines()
        .iter()
        .filter(|l| l["type"] == "notification")
        .map(|l| l["data"]["channel"].as_str().unwrap().to_owned())
        .collect();
    assert!(!labels.is_empty(), "the webhook was notified");
    let label = format!("webhook {}/hook/…", hooks.uri());
    assert!(labels.iter().all(|l| *l == label), "{labels:?}");
    world.assert_prod_runs(NEW);

    let run = world
        .spawn_with(&["-vv", "watch", "--env", "staging", "--once"], &vv)
        .wait()
        .await;
    run.expect_code(0);
    assert_clean(&run);
    let run = world
        .spawn_with(&json_args(&["watch", "--env", "staging", "--once"]), &trace)
        .wait()
        .await;
    run.expect_code(0);
    assert_clean(&run);

    // A password in the Argo CD server's URL (allowed there: it is the operator's own URL)
    // is printed as `***` wherever the URL is, e.g. in the plaintext warning.
    let server = world.argo.server.uri();
    let with_password = server.replacen("://", &format!("://deploy:{ARGOCD_PASSWORD}@"), 1);
    let mut env = env("trace");
    env.push(("ARGOCD_SERVER", with_password.as_str()));
    let run = world
        .spawn_with(
            &["--argocd-server", &with_password, "status", "--env", "prod"],
            &env,
        )
        .wait()
        .await;
    assert!(
        run.stderr.contains("deploy:***@") || run.stderr.contains("***@"),
        "the server is named, without its password: {}",
        run.stderr.lines().take(30).collect::<Vec<_>>().join("\n")
    );
    assert_clean(&run);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_url_with_a_password_is_refused_without_printing_it() {
    let Some(world) = World::start(Replication::Complete).await else {
        return;
    };
    let text = std::fs::read_to_string(&world.config).unwrap();
    let soak = r#"soak = "1s""#;
    let notify = format!(
        "{soak}\nnotify = [{{ webhook = \"http://deploy:{ARGOCD_PASSWORD}@127.0.0.1:9/hook\", secret_env = \"{WEBHOOK_VAR}\" }}]"
    );
    std::fs::write(&world.config, text.replacen(soak, &notify, 1)).unwrap();
    let run = world
        .spawn_with(&json_args(&PROMOTE), &[("RUST_LOG", "trace")])
        .wait()
        .await;
    run.expect_code(2);
    assert!(
        run.stderr.contains("carries a user name or password"),
        "{}",
        run.stderr
    );
    assert_clean(&run);
}
