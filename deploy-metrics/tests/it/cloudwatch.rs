//! CloudWatch alarms on moto: states by name, in order, and a missing name.

use aws_sdk_cloudwatch::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_cloudwatch::types::{ComparisonOperator, StateValue, Statistic};
use deploy_aws::moto::{AwsFiles, Moto};
use deploy_core::port::{MetricSource, Metrics};
use deploy_metrics::{SourceOptions, Sources};

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
