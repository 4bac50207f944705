//! CloudWatch alarms on moto: states by name, in order, and a missing name.

use aws_sdk_cloudwatch::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_cloudwatch::types::{ComparisonOperator, StateValue, Statistic};
use deploy_aws::moto::{AwsFiles, Moto};
use deploy_core::config::MetricSource;
use deploy_core::port::Metrics;
use deploy_metrics::{SourceOptions, Sources};
use std::sync::Arc;
use std::time::Duration;

/// A plain CloudWatch client on moto, independent of the code under test.
fn fixture(endpoint: &str) -> aws_sdk_cloudwatch::Client {
    let config = aws_sdk_cloudwatch::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("eu-west-1"))
        .credentials_provider(Credentials::new(
            "AKIDFIXTURE",
            "secret",
            None,
            None,
            "test",
        ))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_cloudwatch::Client::from_conf(config)
}

async fn put_alarm(client: &aws_sdk_cloudwatch::Client, name: &str) {
    client
        .put_metric_alarm()
        .alarm_name(name)
        .namespace("myapp")
        .metric_name("5xx")
        .statistic(Statistic::Sum)
        .period(60)
        .evaluation_periods(1)
        .threshold(1.0)
        .comparison_operator(ComparisonOperator::GreaterThanOrEqualToThreshold)
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutMetricAlarm {name}: {e:?}"));
}

async fn set_state(client: &aws_sdk_cloudwatch::Client, name: &str, state: StateValue) {
    client
        .set_alarm_state()
        .alarm_name(name)
        .state_value(state)
        .state_reason("test")
        .send()
        .await
        .unwrap_or_else(|e| panic!("SetAlarmState {name}: {e:?}"));
}

// The skip is said where cargo shows it, as deploy-aws's moto tests do.
#[allow(clippy::print_stderr)]
#[tokio::test]
async fn alarms_read_one_value_per_name_in_order() {
    let moto = match Moto::start("111111111111") {
        Ok(moto) => moto,
        Err(e) => {
            eprintln!("skipping: {e}");
            return;
        }
    };
    let cw = fixture(&moto.endpoint);
    for name in ["myapp-eu-west-1-5xx", "myapp-eu-west-1-latency"] {
        put_alarm(&cw, name).await;
    }
    set_state(&cw, "myapp-eu-west-1-5xx", StateValue::Ok).await;
    set_state(&cw, "myapp-eu-west-1-latency", StateValue::Ok).await;

    // The code under test reaches moto through a profile's endpoint_url.
    let files = AwsFiles::new(&[("monitoring", &moto.endpoint)], "");
    let mut options = SourceOptions::default();
    options.config_file = Some(files.config.clone());
    options.credentials_file = Some(files.credentials.clone());
    let sources = Sources::new(options).expect("sources");
    let source = |names: &[&str]| MetricSource::CloudWatchAlarms {
        names: names.iter().map(|n| (*n).to_owned()).collect(),
        region: "eu-west-1".to_owned(),
        aws_profile: Some("monitoring".to_owned()),
    };
    let both = source(&["myapp-eu-west-1-latency", "myapp-eu-west-1-5xx"]);

    assert_eq!(
        sources.measure(&both, "").await.expect("OK"),
        vec![0.0, 0.0]
    );

    set_state(&cw, "myapp-eu-west-1-5xx", StateValue::Alarm).await;
    assert_eq!(
        sources.measure(&both, "").await.expect("one in ALARM"),
        vec![0.0, 1.0]
    );

    set_state(&cw, "myapp-eu-west-1-5xx", StateValue::InsufficientData).await;
    assert_eq!(
        sources.measure(&both, "").await.expect("insufficient data"),
        vec![0.0, 0.0]
    );

    let err = sources
        .measure(&source(&["myapp-eu-west-1-5xx", "myapp-us-east-1-5xx"]), "")
        .await
        .expect_err("a missing alarm");
    assert_eq!(err.kind(), "invalid", "{err}");
    assert!(
        err.to_string()
            .contains("no alarm named myapp-us-east-1-5xx"),
        "{err}"
    );
    assert!(err.to_string().contains("eu-west-1"), "{err}");
    assert!(!err.to_string().contains("myapp-eu-west-1-5xx"), "{err}");

    // Alarms of another region are not these.
    let err = sources
        .measure(
            &MetricSource::CloudWatchAlarms {
                names: vec!["myapp-eu-west-1-5xx".to_owned()],
                region: "us-east-1".to_owned(),
                aws_profile: Some("monitoring".to_owned()),
            },
            "",
        )
        .await
        .expect_err("another region");
    assert_eq!(err.kind(), "invalid", "{err}");

    // moto stopped: the source cannot be reached.
    drop(moto);
    let err = sources.measure(&both, "").await.expect_err("moto stopped");
    assert_eq!(err.kind(), "transient", "{err}");
}

/// The whole path on moto: prod's check reads each region's `myapp-{region}-5xx` alarm through
/// the real CloudWatch adapter while the engine promotes on the in-memory Argo CD. eu-west-1's
/// alarm goes to ALARM once wave 2 soaks: the wave halts on it and both waves roll back.
#[allow(clippy::print_stderr)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_in_alarm_during_the_soak_halts_the_wave_and_rolls_back() {
    use deploy_core::config::{Config, EXAMPLE};
    use deploy_core::model::Tag;
    use deploy_core::plan::promotion::{Intent, plan};
    use deploy_core::rollout::event::Event;
    use deploy_core::sim::Timing;
    use deploy_core::trail::AppState;
    use deploy_core::trail::Outcome;
    use deploy_engine::clock::TokioClock;
    use deploy_engine::engine::{Engine, RunOptions};
    use deploy_engine::memory::World;

    let moto = match Moto::start("111111111111") {
        Ok(moto) => moto,
        Err(e) => {
            eprintln!("skipping: {e}");
            return;
        }
    };
    let regions = ["us-west-2", "us-east-1", "eu-west-1"];
    for region in regions {
        let cw = fixture(&moto.endpoint);
        let cw = aws_sdk_cloudwatch::Client::from_conf(
            cw.config().to_builder().region(Region::new(region)).build(),
        );
        let name = format!("myapp-{region}-5xx");
        put_alarm(&cw, &name).await;
        set_state(&cw, &name, StateValue::Ok).await;
    }
    // The example, with prod's check reading the alarms, a 2 s soak, a measurement a second.
    let at = EXAMPLE
        .find("[[environments.prod.checks]]")
        .expect("prod's checks");
    let text = format!(
        "{}{}",
        &EXAMPLE[..at],
        r#"[[environments.prod.checks]]
name = "alarms"
cloudwatch_alarms = { names = ["myapp-{region}-5xx"], region = "{region}", aws_profile = "monitoring" }
interval = "1s"
"#
    )
    .replacen("soak = \"5m\"", "soak = \"2s\"", 1);
    let config = Config::parse("deploy.toml", &text).expect("the edited example");
    let (staging, prod) = (
        config.environment("staging").unwrap(),
        config.environment("prod").unwrap(),
    );
    let tag = |t: &str| Tag::new(t).unwrap();
    let clock = Arc::new(TokioClock::new(jiff::Timestamp::now()));
    let world = World::seeded(&config, clock, &tag("1111111aaaaa"));
    world.argocd.set_timing(Timing {
        sync: Duration::from_millis(100),
        health: Duration::from_millis(100),
    });
    world.ci_push(&config, staging, &tag("2222222bbbbb"));
    world
        .write_release(&config, staging, &tag("2222222bbbbb"))
        .await
        .unwrap();
    // Staging syncs T2 by itself (200 ms here): plan once it has, within 30 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let p = loop {
        let obs = world
            .observe(&config, prod, Intent::Promote { tag: None })
            .await
            .unwrap();
        let p = plan(&config, prod, &obs);
        if p.is_go() || tokio::time::Instant::now() > deadline {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(p.is_go(), "{:#?}", p.failed_gate());

    let files = AwsFiles::new(&[("monitoring", &moto.endpoint)], "");
    let mut options = SourceOptions::default();
    options.config_file = Some(files.config.clone());
    options.credentials_file = Some(files.credentials.clone());
    let sources = Sources::new(options).expect("sources");
    let ports = deploy_engine::engine::Ports::of_world(&world).with_metrics(Some(&sources));
    let opts = RunOptions::new("alarms", "test", "test-prod");
    let (tx, mut soaking) = tokio::sync::mpsc::unbounded_channel();
    let mut events = Vec::new();
    let engine = Engine::new(ports, opts);
    let run = async {
        let report = engine
            .run(&p, |e| {
                if matches!(e, Event::SoakStarted { wave: 2, .. }) {
                    let _ = tx.send(());
                }
                events.push(e);
            })
            .await;
        drop(tx);
        report
    };
    let alarm = async {
        // No wave 2 soak (the run ended before it): the assertions below say why.
        if soaking.recv().await.is_some() {
            let cw = fixture(&moto.endpoint);
            set_state(&cw, "myapp-eu-west-1-5xx", StateValue::Alarm).await;
        }
    };
    let (report, ()) = tokio::join!(run, alarm);
    let report = report.expect("ran");
    assert_eq!(report.outcome, Outcome::RolledBack, "{}", report.message);
    assert!(
        report
            .message
            .contains("eu-west-1: check alarms failed at 1"),
        "{}",
        report.message
    );
    assert!(
        report.apps.iter().all(|a| a.state == AppState::RolledBack),
        "{:?}",
        report.apps
    );
    // Wave 1's alarm was measured OK; eu-west-1's last measurement saw ALARM.
    let measured = |cluster: &str| -> Vec<Vec<f64>> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::CheckMeasured {
                    cluster: c, values, ..
                } if c == cluster => Some(values.clone()),
                _ => None,
            })
            .collect()
    };
    assert!(measured("us-west-2").iter().all(|v| v == &[0.0]));
    assert_eq!(measured("eu-west-1").last(), Some(&vec![1.0]));
}
