//! Test support, not for production use: a real Prometheus server (Debian's `prometheus`
//! package) started by a test on a loopback port, with a config the test writes and a
//! temporary storage directory, killed on drop; and an [`Exporter`] for it to scrape,
//! whose page the test writes.
//!
//! Compiled only with the `prometheus-server` feature:
//!
//! ```toml
//! [dev-dependencies]
//! deploy-metrics = { workspace = true, features = ["prometheus-server"] }
//! ```
//!
//! The binary is `$PROMETHEUS`, else `prometheus` on the `PATH`, else
//! `/usr/bin/prometheus`. Where it is missing [`PrometheusServer::start`] returns
//! [`Unavailable`] and the caller skips its test, except under `CI=true`, where a missing
//! Prometheus panics, failing the test (DESIGN §6).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// How often a waiting harness asks Prometheus again.
const POLL: Duration = Duration::from_millis(50);

/// A Prometheus process scraping the test's targets every second.
pub struct PrometheusServer {
    child: Child,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    http: reqwest::Client,
}

impl PrometheusServer {
    /// Starts Prometheus scraping `targets` (`host:port`, path `/metrics`, job `test`)
    /// every second, and waits until it is ready (`/-/ready`).
    pub async fn start(targets: &[&str]) -> Result<Self, Unavailable> {
        let dir = tempfile::tempdir().expect("temp dir");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: test\n    scrape_interval: 1s\n    scrape_timeout: 900ms\n    \
             static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).expect("write prometheus.yml");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let mut tried = Vec::new();
        let mut child = None;
        for program in candidates() {
            let spawned = Command::new(&program)
                .arg(format!("--config.file={}", config_file.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--log.level=warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            match spawned {
                Ok(c) => {
                    child = Some(c);
                    break;
                }
                Err(e) => tried.push(format!("{}: {e}", program.display())),
            }
        }
        let Some(child) = child else {
            return Err(unavailable(format!(
                "Prometheus is not available ({}); install it with: apt-get install -y prometheus (or set PROMETHEUS to its binary)",
                tried.join("; ")
            )));
        };
        // reqwest takes rustls's process-wide crypto provider and has none of its own here
        // (Cargo.toml): the workspace's, aws-lc-rs, unless the process installed one already.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut server = Self {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("HTTP client"),
        };
        let ready = format!("{}/-/ready", server.url);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(unavailable(format!(
                    "Prometheus exited with {status} before it was ready (config in {})",
                    server.dir.path().display()
                )));
            }
            match server.http.get(&ready).send().await {
                Ok(r) if r.status().is_success() => return Ok(server),
                _ if Instant::now() > deadline => {
                    panic!("Prometheus at {} not ready within 60 s", server.url)
                }
                _ => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// Waits (up to 30 s) until the instant query `query` returns a result for which
    /// `until` holds, and returns it: the values, in order.
    pub async fn wait_for(&self, query: &str, until: impl Fn(&[f64]) -> bool) -> Vec<f64> {
        let url = format!("{}/api/v1/query", self.url);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = None;
        loop {
            let answer = self
                .http
                .post(&url)
                .form(&[("query", query)])
                .send()
                .await
                .ok();
            if let Some(answer) = answer
                && let Ok(body) = answer.bytes().await
            {
                let values = crate::prometheus::read_answer(&url, 200, None, &body);
                if let Ok(values) = &values
                    && until(values)
                {
                    return values.clone();
                }
                last = Some(values);
            }
            if Instant::now() > deadline {
                panic!(
                    "{query} at {}: not as expected within 30 s, last {last:?}",
                    self.url
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until every target has been scraped once (`up == 1`).
    pub async fn wait_for_scrape(&self) {
        self.wait_for("min(up{job=\"test\"})", |v| v == [1.0]).await;
    }

    /// Stops the server (as a crash would: the port then refuses connections).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for PrometheusServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusServer")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// A `/metrics` endpoint on a loopback port: every scrape answers the page the test's
/// closure writes then (Prometheus text format), so a test can make a counter grow per scrape
/// or a gauge change when it likes.
pub struct Exporter {
    server: MockServer,
    scrapes: Arc<AtomicU64>,
}

impl Exporter {
    /// Starts an exporter answering `GET /metrics` with `page(n)`, `n` the scrape's number
    /// (1 for the first).
    pub async fn start(page: impl Fn(u64) -> String + Send + Sync + 'static) -> Self {
        let server = MockServer::start().await;
        let scrapes = Arc::new(AtomicU64::new(0));
        let counted = scrapes.clone();
        Mock::given(method("GET"))
            .and(path("/metrics"))
            .respond_with(move |_: &Request| {
                let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                ResponseTemplate::new(200)
                    .insert_header("content-type", "text/plain; version=0.0.4")
                    .set_body_string(page(n))
            })
            .mount(&server)
            .await;
        Self { server, scrapes }
    }

    /// `127.0.0.1:PORT`, a target for [`PrometheusServer::start`].
    pub fn target(&self) -> String {
        self.server.address().to_string()
    }

    /// How many scrapes it has answered.
    pub fn scrapes(&self) -> u64 {
        self.scrapes.load(Ordering::SeqCst)
    }
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("target", &self.target())
            .field("scrapes", &self.scrapes())
            .finish()
    }
}

fn candidates() -> Vec<PathBuf> {
    let mut programs = Vec::new();
    if let Some(path) = std::env::var_os("PROMETHEUS") {
        programs.push(PathBuf::from(path));
    }
    programs.push(PathBuf::from("prometheus"));
    programs.push(PathBuf::from("/usr/bin/prometheus"));
    programs
}

fn unavailable(message: String) -> Unavailable {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}");
    }
    Unavailable(message)
}

/// Prometheus could not be started; the message says what was tried and how to install it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unavailable {}
