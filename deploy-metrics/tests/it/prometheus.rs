//! Prometheus instant queries against a real Prometheus server scraping an exporter the
//! test controls, and failure answers over wiremock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deploy_core::port::Metrics;
use deploy_metrics::prometheus_server::{Exporter, PrometheusServer};
use deploy_metrics::{SourceOptions, Sources};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::plain;

/// An exporter serving `/metrics` with `http_requests_total{code="200"}` at the value the
/// test sets, and a constant `http_requests_total{code="500"} 2`.
async fn exporter() -> (Exporter, Arc<AtomicU64>) {
    let value = Arc::new(AtomicU64::new(42));
    let shared = value.clone();
    let exporter = Exporter::start(move |_| {
        let v = shared.load(Ordering::SeqCst);
        format!(
            "# TYPE http_requests_total counter\n\
             http_requests_total{{code=\"200\"}} {v}\n\
             http_requests_total{{code=\"500\"}} 2\n"
        )
    })
    .await;
    (exporter, value)
}

/// Prometheus scraping `exporter`, or `None` (the test skips) where it is not installed.
// The skip is said where cargo shows it, as deploy-aws's moto tests do.
#[allow(clippy::print_stderr)]
async fn prometheus(exporter: &Exporter) -> Option<PrometheusServer> {
    match PrometheusServer::start(&[&exporter.target()]).await {
        Ok(server) => {
            server.wait_for_scrape().await;
            Some(server)
        }
        Err(e) => {
            eprintln!("skipping: {e}");
            None
        }
    }
}

fn sources() -> Sources {
    Sources::new(SourceOptions::default()).expect("sources")
}

#[tokio::test]
async fn a_real_prometheus_answers_with_the_exported_values() {
    let (exporter, value) = exporter().await;
    let Some(server) = prometheus(&exporter).await else {
        return;
    };
    let source = plain(&server.url);
    let sources = sources();

    let got = sources
        .measure(&source, r#"http_requests_total{code="200"}"#)
        .await
        .expect("vector of one");
    assert_eq!(got, vec![42.0]);

    // The counter the test changes is what the next measurement sees.
    value.store(43, Ordering::SeqCst);
    server
        .wait_for(r#"http_requests_total{code="200"}"#, |v| v == [43.0])
        .await;
    let got = sources
        .measure(&source, r#"http_requests_total{code="200"}"#)
        .await
        .expect("vector of one");
    assert_eq!(got, vec![43.0]);

    // Several series, in the order returned (sort() fixes it).
    let got = sources
        .measure(&source, "sort(http_requests_total)")
        .await
        .expect("vector of two");
    assert_eq!(got, vec![2.0, 43.0]);

    // Scalars, NaN and infinities.
    let got = sources
        .measure(&source, r#"scalar(http_requests_total{code="500"}) * 2"#)
        .await
        .expect("scalar");
    assert_eq!(got, vec![4.0]);
    let got = sources.measure(&source, "0/0").await.expect("NaN");
    assert!(got.len() == 1 && got[0].is_nan(), "{got:?}");
    let got = sources.measure(&source, "1/0").await.expect("+Inf");
    assert_eq!(got, vec![f64::INFINITY]);
    let got = sources.measure(&source, "-1/0").await.expect("-Inf");
    assert_eq!(got, vec![f64::NEG_INFINITY]);
}

#[tokio::test]
async fn an_empty_result_is_an_empty_vector_and_a_bad_query_is_invalid() {
    let (exporter, _value) = exporter().await;
    let Some(server) = prometheus(&exporter).await else {
        return;
    };
    let source = plain(&server.url);
    let sources = sources();

    let got = sources
        .measure(&source, r#"http_requests_total{code="404"}"#)
        .await
        .expect("empty vector");
    assert_eq!(got, Vec::<f64>::new());

    let err = sources
        .measure(&source, "sum(http_requests_total")
        .await
        .expect_err("a parse error");
    assert_eq!(err.kind(), "invalid", "{err}");
    assert!(err.to_string().contains("bad_data"), "{err}");
    assert!(err.to_string().contains("parse error"), "{err}");

    // A range vector is not a measurement.
    let err = sources
        .measure(&source, "http_requests_total[1m]")
        .await
        .expect_err("a matrix");
    assert_eq!(err.kind(), "invalid", "{err}");
    assert!(err.to_string().contains("range vector"), "{err}");
}

#[tokio::test]
async fn a_stopped_prometheus_is_transient() {
    let (exporter, _value) = exporter().await;
    let Some(mut server) = prometheus(&exporter).await else {
        return;
    };
    let source = plain(&server.url);
    let sources = sources();
    assert_eq!(
        sources.measure(&source, "vector(1)").await.expect("up"),
        vec![1.0]
    );

    server.stop();
    let err = sources
        .measure(&source, "vector(1)")
        .await
        .expect_err("a stopped Prometheus");
    // The pooled connection was closed under the request.
    assert_eq!(err.kind(), "transient", "{err}");
    assert!(err.to_string().contains(&server.url), "{err}");

    // A new connection is refused.
    let err = self::sources()
        .measure(&source, "vector(1)")
        .await
        .expect_err("a stopped Prometheus");
    assert_eq!(err.kind(), "transient", "{err}");
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

#[tokio::test]
async fn server_errors_and_timeouts_are_transient() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/bad/api/v1/query"))
        .respond_with(ResponseTemplate::new(502).set_body_string("Bad Gateway"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/slow/api/v1/query"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string(
                    r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
                )
                .set_delay(Duration::from_secs(10)),
        )
        .expect(1)
        .mount(&server)
        .await;
    let mut options = SourceOptions::default();
    options.request_timeout = Duration::from_millis(300);
    let sources = Sources::new(options).expect("sources");

    let err = sources
        .measure(&plain(&format!("{}/bad", server.uri())), "up")
        .await
        .expect_err("502");
    assert_eq!(err.kind(), "transient", "{err}");
    assert!(err.to_string().contains("HTTP 502"), "{err}");

    let err = sources
        .measure(&plain(&format!("{}/slow/", server.uri())), "up")
        .await
        .expect_err("timeout");
    assert_eq!(err.kind(), "transient", "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
}

#[tokio::test]
async fn the_answer_is_bounded_and_the_query_is_a_form_body() {
    let server = MockServer::start().await;
    let series: Vec<String> = (0..1000)
        .map(|i| format!(r#"{{"metric":{{"pod":"p{i}"}},"value":[1,"{i}"]}}"#))
        .collect();
    let body = format!(
        r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
        series.join(",")
    );
    Mock::given(method("POST"))
        .and(path("/api/v1/query"))
        .and(wiremock::matchers::header(
            "content-type",
            "application/x-www-form-urlencoded",
        ))
        .and(wiremock::matchers::body_string(
            "query=sum+by+%28pod%29+%28up%29",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_string(body))
        .expect(2)
        .mount(&server)
        .await;

    let got = sources()
        .measure(&plain(&server.uri()), "sum by (pod) (up)")
        .await
        .expect("1000 series");
    assert_eq!(got.len(), 1000);

    let mut options = SourceOptions::default();
    options.max_body_bytes = 10_000;
    let err = Sources::new(options)
        .expect("sources")
        .measure(&plain(&server.uri()), "sum by (pod) (up)")
        .await
        .expect_err("too large");
    assert_eq!(err.kind(), "invalid", "{err}");
    assert!(err.to_string().contains("larger than 10000 bytes"), "{err}");
}
