//! Prometheus instant queries (`/api/v1/query`) and the reading of their answers.

use std::time::Duration;

use deploy_core::{Error, Result};
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::SourceOptions;
use crate::sigv4::Signer;

/// A Prometheus HTTP API client: one connection pool for every source URL.
#[derive(Debug, Clone)]
pub(crate) struct PrometheusClient {
    http: reqwest::Client,
    max_body_bytes: usize,
}

impl PrometheusClient {
    pub(crate) fn new(options: &SourceOptions) -> Result<Self> {
        // reqwest takes rustls's process-wide crypto provider and has none of its own here
        // (Cargo.toml): the workspace's, aws-lc-rs, unless the process installed one already.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .user_agent(concat!("deploy/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::invalid(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            max_body_bytes: options.max_body_bytes,
        })
    }

    /// The values of the instant query `query` at `base` (`…/api/v1/query` is appended),
    /// signed by `signer` when given.
    pub(crate) async fn query(
        &self,
        base: &str,
        query: &str,
        signer: Option<&Signer<'_>>,
    ) -> Result<Vec<f64>> {
        let url = format!("{}/api/v1/query", base.trim_end_matches('/'));
        let mut request = self
            .http
            .post(&url)
            .form(&[("query", query)])
            .build()
            .map_err(|e| Error::invalid(format!("Prometheus {url}: {e}")))?;
        if let Some(signer) = signer {
            signer.sign(&mut request).await?;
        }
        let mut response = self
            .http
            .execute(request)
            .await
            .map_err(|e| unreachable(&url, &e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| unreachable(&url, &e))? {
            if body.len() + chunk.len() > self.max_body_bytes {
                return Err(Error::invalid(format!(
                    "Prometheus {url}: the answer to `{query}` is larger than {} bytes; aggregate the query (e.g. sum by a label)",
                    self.max_body_bytes
                )));
            }
            body.extend_from_slice(&chunk);
        }
        read_answer(&url, status.as_u16(), retry_after, &body)
    }
}

fn unreachable(url: &str, e: &reqwest::Error) -> Error {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    Error::transient(format!(
        "Prometheus {url}: {what} ({detail}); check that it is up and reachable from here"
    ))
}

#[derive(Debug, Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Scalar(Sample),
    Vector(Vec<Series>),
    Matrix(IgnoredAny),
    String(IgnoredAny),
}

#[derive(Debug, Deserialize)]
struct Series {
    value: Sample,
}

/// `[unix_time, "value"]`.
#[derive(Debug, Deserialize)]
struct Sample(IgnoredAny, String);

/// Error types Prometheus reports for a query that may succeed later.
const TRANSIENT_ERROR_TYPES: &[&str] = &["timeout", "canceled", "unavailable", "internal"];

/// The values of one `/api/v1/query` answer with HTTP `status` and `body`. Public for the
/// fuzz target in `fuzz/`.
pub fn read_answer(
    url: &str,
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<Vec<f64>> {
    let answer: Option<Answer> = serde_json::from_slice(body).ok();
    let transient = |message: String| Error::Transient {
        message,
        retry_after,
    };
    match answer {
        Some(Answer {
            status: s,
            data: Some(data),
            ..
        }) if s == "success" => values(url, data),
        Some(Answer {
            status: s,
            error_type,
            error,
            ..
        }) if s == "error" => {
            let kind = error_type.unwrap_or_default();
            let message = format!(
                "Prometheus {url}: {kind}: {}",
                error.unwrap_or_else(|| "no message".to_owned())
            );
            if TRANSIENT_ERROR_TYPES.contains(&kind.as_str()) || status >= 500 || status == 429 {
                Err(transient(message))
            } else if status == 401 || status == 403 {
                Err(Error::Permission { message })
            } else {
                Err(Error::invalid(message))
            }
        }
        _ => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
            let text = text.trim();
            match status {
                401 | 403 => Err(Error::Permission {
                    message: format!(
                        "Prometheus {url}: HTTP {status} {text}; check the credentials (for Amazon Managed Prometheus, aps:QueryMetrics)"
                    ),
                }),
                429 | 500.. => Err(transient(format!("Prometheus {url}: HTTP {status} {text}"))),
                _ => Err(Error::invalid(format!(
                    "Prometheus {url}: HTTP {status}, not a Prometheus API answer: {text}"
                ))),
            }
        }
    }
}

fn values(url: &str, data: Data) -> Result<Vec<f64>> {
    match data {
        Data::Scalar(sample) => Ok(vec![number(url, &sample.1)?]),
        Data::Vector(series) => series.iter().map(|s| number(url, &s.value.1)).collect(),
        Data::Matrix(_) => Err(Error::invalid(format!(
            "Prometheus {url}: the query returns a range vector (matrix); a check needs an instant vector or a scalar (wrap it in e.g. rate(...))"
        ))),
        Data::String(_) => Err(Error::invalid(format!(
            "Prometheus {url}: the query returns a string; a check needs a number"
        ))),
    }
}

/// A sample value as Prometheus writes it: a float, `NaN`, `+Inf` or `-Inf`.
fn number(url: &str, text: &str) -> Result<f64> {
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => text.parse().map_err(|_| {
            Error::invalid(format!(
                "Prometheus {url}: sample value {text:?} is not a number"
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::read_answer;
    use deploy_core::Error;

    /// Reads `body` answered with `status`; `expect` is the values or the error kind
    /// with a fragment of its message.
    fn check(status: u16, body: &str, expect: Result<&[f64], (&str, &str)>) {
        let got = read_answer("http://p", status, None, body.as_bytes());
        match (got, expect) {
            (Ok(got), Ok(want)) => {
                assert_eq!(got.len(), want.len(), "{body}");
                for (g, w) in got.iter().zip(want) {
                    assert!(
                        g == w || (g.is_nan() && w.is_nan()),
                        "{body}: {got:?} != {want:?}"
                    );
                }
            }
            (Err(e), Err((kind, fragment))) => {
                assert_eq!(e.kind(), kind, "{body}: {e}");
                assert!(e.to_string().contains(fragment), "{body}: {e}");
            }
            (got, want) => panic!("{body}: got {got:?}, want {want:?}"),
        }
    }

    const SCALAR: &str =
        r#"{"status":"success","data":{"resultType":"scalar","result":[1700000000.1,"0.25"]}}"#;

    #[test]
    fn answers() {
        check(200, SCALAR, Ok(&[0.25]));
        check(
            200,
            r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
            Ok(&[]),
        );
        check(
            200,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2.5"]}]}}"#,
            Ok(&[1.0, 2.5]),
        );
        check(
            200,
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]},{"metric":{},"value":[1,"+Inf"]},{"metric":{},"value":[1,"-Inf"]}]}}"#,
            Ok(&[f64::NAN, f64::INFINITY, f64::NEG_INFINITY]),
        );
        check(
            200,
            r#"{"status":"success","data":{"resultType":"scalar","result":[1,"NaN"]}}"#,
            Ok(&[f64::NAN]),
        );
        check(
            200,
            r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
            Err(("invalid", "range vector")),
        );
        check(
            200,
            r#"{"status":"success","data":{"resultType":"string","result":[1,"x"]}}"#,
            Err(("invalid", "string")),
        );
        check(
            200,
            r#"{"status":"success","data":{"resultType":"scalar","result":[1,"abc"]}}"#,
            Err(("invalid", "\"abc\" is not a number")),
        );
        check(
            400,
            r#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unclosed left parenthesis"}"#,
            Err((
                "invalid",
                "bad_data: 1:5: parse error: unclosed left parenthesis",
            )),
        );
        check(
            422,
            r#"{"status":"error","errorType":"execution","error":"many-to-many matching not allowed"}"#,
            Err(("invalid", "many-to-many")),
        );
        check(
            503,
            r#"{"status":"error","errorType":"timeout","error":"query timed out in expression evaluation"}"#,
            Err(("transient", "query timed out")),
        );
        check(
            502,
            "<html>Bad Gateway</html>",
            Err(("transient", "HTTP 502")),
        );
        check(503, "", Err(("transient", "HTTP 503")));
        check(429, "slow down", Err(("transient", "HTTP 429")));
        check(403, "denied", Err(("permission", "aps:QueryMetrics")));
        check(
            404,
            "404 page not found",
            Err(("invalid", "not a Prometheus API answer")),
        );
        check(
            200,
            "not json",
            Err(("invalid", "not a Prometheus API answer")),
        );
    }

    #[test]
    fn retry_after_is_kept() {
        let got = read_answer(
            "http://p",
            503,
            Some(std::time::Duration::from_secs(7)),
            b"busy",
        );
        assert!(matches!(
            got,
            Err(Error::Transient { retry_after: Some(d), .. }) if d.as_secs() == 7
        ));
    }
}
