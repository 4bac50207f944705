//! End-to-end bench of `deploy watch` (issue 6, "Performance"): the release `deploy` binary
//! polls an automated staging environment every 100 ms (the shortest interval) for 1,000
//! cycles, against ECR on moto and the fake Argo CD of deploy-argocd.
//!
//! A small counting HTTP proxy sits between `deploy` and moto, so requests per cycle are
//! counted on the wire (by `x-amz-target`, and for `DescribeImages` by whether it lists the
//! repository or looks up a tag), not inferred. Argo CD requests are the ones the fake
//! received. Poll cycles are counted from the `poll` lines of `--output json`; CPU time is
//! `utime + stime` of `/proc/PID/stat`, peak resident memory `VmHWM` of `/proc/PID/status`.
//!
//! Each case: the first poll writes release T1 into every staging Application (warm-up, 20
//! polls), then 1,000 idle cycles are measured, then release T2 is pushed (sentinel last, as CI
//! does) and the cycle that finds and writes it is measured, then 10 idle cycles more and
//! SIGTERM.
//!
//! Run: `cargo bench -p deploy-cli --bench watch` (about 7 min after the build).
//! `WATCH_CYCLES=200` sets the idle cycles per case; `WATCH_CASES=3:1000,100:10` picks the
//! cases, each `CLUSTERS:REGISTRY_RPS` (3 clusters: the example configuration; otherwise a
//! generated one with 3 services). `MALLOC_ARENA_MAX` and `TOKIO_WORKER_THREADS` are passed
//! to `deploy` when set.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::response::Response;
use axum::serve::ListenerExt;
use deploy_argocd::fake::{FakeArgo, TOKEN};
use deploy_aws::moto::{AwsFiles, EcrFixture, Moto};
use deploy_core::config::{Config, EXAMPLE};
use deploy_core::model::Tag;
use deploy_engine::conformance::argocd::ArgoCdFixture;
use deploy_engine::conformance::registry::{RegistryFixture, manifest};
use deploy_engine::memory::world::{app_seed, generated_config, generated_wave_size};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const STAGING: &str = "111111111111";
/// What the staging Applications run at the start: not in the registry.
const T0: &str = "0a0a0a0";
/// The release in the registry at the start; the first poll writes it.
const T1: &str = "1b1b1b1";
/// The release pushed after the idle cycles.
const T2: &str = "2c2c2c2";
/// Polls after the first write before the idle cycles are measured.
const WARMUP: u64 = 20;
/// Idle polls after the new release, checked to be idle again.
const AFTER: u64 = 10;
/// How long any one step may take before the bench calls it a hang.
const DEADLINE: Duration = Duration::from_secs(60);

fn tag(t: &str) -> Tag {
    t.parse().expect("a valid tag")
}

/// What the proxy saw.
#[derive(Default)]
struct Wire {
    /// Requests by operation.
    ops: Mutex<BTreeMap<String, u64>>,
    /// TCP connections accepted.
    connections: AtomicU64,
    /// Time spent waiting on moto, summed over requests.
    upstream_nanos: AtomicU64,
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    client: reqwest::Client,
    wire: Arc<Wire>,
}

/// The operation of an ECR request: `x-amz-target` without its service prefix;
/// `DescribeImages` is split into the listing (no `imageIds`) and the lookup of a tag.
fn operation(target: Option<&str>, body: &[u8]) -> String {
    let op = target
        .and_then(|t| t.rsplit('.').next())
        .unwrap_or("(no x-amz-target)");
    if op == "DescribeImages" {
        let by_tag = serde_json::from_slice::<Value>(body)
            .ok()
            .is_some_and(|b| b.get("imageIds").is_some());
        return if by_tag {
            "DescribeImages (tag lookup)".into()
        } else {
            "DescribeImages (list)".into()
        };
    }
    op.to_owned()
}

async fn forward(State(proxy): State<Proxy>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return status(StatusCode::BAD_REQUEST);
    };
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok());
    let op = operation(target, &body);
    *proxy
        .wire
        .ops
        .lock()
        .expect("counters")
        .entry(op)
        .or_default() += 1;
    let url = format!(
        "{}{}",
        proxy.upstream,
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let hop = |name: &HeaderName| {
        matches!(
            name.as_str(),
            "host" | "connection" | "content-length" | "transfer-encoding" | "keep-alive"
        )
    };
    let mut upstream = proxy.client.request(parts.method, url).body(body);
    for (name, value) in &parts.headers {
        if !hop(name) {
            upstream = upstream.header(name, value);
        }
    }
    let started = Instant::now();
    let answer = upstream.send().await;
    let answer = match answer {
        Ok(a) => {
            let code = a.status();
            let headers = a.headers().clone();
            a.bytes().await.map(|b| (code, headers, b))
        }
        Err(e) => Err(e),
    };
    proxy
        .wire
        .upstream_nanos
        .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    let Ok((code, headers, bytes)) = answer else {
        return status(StatusCode::BAD_GATEWAY);
    };
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = code;
    for (name, value) in &headers {
        if !hop(name) {
            response.headers_mut().append(name, value.clone());
        }
    }
    response
}

fn status(code: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = code;
    r
}

/// Starts the proxy in front of `upstream`; returns its URL.
async fn start_proxy(upstream: &str, wire: Arc<Wire>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("bound");
    let counted = wire.clone();
    let listener = listener.tap_io(move |_| {
        counted.connections.fetch_add(1, Ordering::Relaxed);
    });
    let proxy = Proxy {
        upstream: upstream.trim_end_matches('/').to_owned(),
        client: reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("a client"),
        wire,
    };
    let app = Router::new().fallback(forward).with_state(proxy);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("the proxy stopped: {e}");
        }
    });
    format!("http://{addr}")
}

/// Counters at one point.
#[derive(Debug, Clone)]
struct Snap {
    at: Instant,
    ops: BTreeMap<String, u64>,
    connections: u64,
    upstream: Duration,
    argo: BTreeMap<&'static str, u64>,
    proc: Proc,
}

/// What `/proc` says about the `deploy` process.
#[derive(Debug, Clone, Copy, Default)]
struct Proc {
    /// utime + stime, in clock ticks.
    cpu_ticks: u64,
    /// stime alone.
    sys_ticks: u64,
    hwm_kib: u64,
    rss_kib: u64,
    anon_kib: u64,
    file_kib: u64,
    threads: u64,
}

fn read_proc(pid: u32) -> Proc {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses; utime and stime
    // are fields 14 and 15, so 12 and 13 after it.
    let after = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let sys_ticks = fields.get(12).copied().unwrap_or(0);
    let cpu_ticks = fields.get(11).copied().unwrap_or(0) + sys_ticks;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Proc {
        cpu_ticks,
        sys_ticks,
        hwm_kib: field("VmHWM:"),
        rss_kib: field("VmRSS:"),
        anon_kib: field("RssAnon:"),
        file_kib: field("RssFile:"),
        threads: field("Threads:"),
    }
}

fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// The kind of a request to the fake Argo CD.
fn argo_kind(r: &wiremock::Request) -> &'static str {
    match (r.method.as_str(), r.url.path()) {
        ("GET", p) if p.starts_with("/api/v1/applications/") => "GET app",
        ("GET", "/api/v1/applications") => "list",
        ("PATCH", _) => "PATCH app",
        ("POST", _) => "POST",
        _ => "other",
    }
}

/// One case: a configuration and a rate bound.
struct Case {
    clusters: usize,
    rps: u32,
    config_text: String,
    config: Config,
}

impl Case {
    fn new(clusters: usize, rps: u32) -> Self {
        let config_text = if clusters == 3 {
            EXAMPLE.to_owned()
        } else {
            generated_config(clusters, 3, generated_wave_size(clusters), "0s")
        };
        let config = Config::parse("deploy.toml", &config_text).expect("a valid configuration");
        assert_eq!(config.clusters.len(), clusters);
        Self {
            clusters,
            rps,
            config_text,
            config,
        }
    }

    fn label(&self) -> String {
        let what = if self.clusters == 3 {
            "example, 3 clusters".to_owned()
        } else {
            format!("generated, {} clusters", self.clusters)
        };
        format!("{what}, --registry-rps {}", self.rps)
    }
}

/// The world of one case and the running `deploy watch`.
struct Bench {
    _moto: Moto,
    ecr: Arc<EcrFixture>,
    argo: FakeArgo,
    wire: Arc<Wire>,
    _aws: AwsFiles,
    dir: tempfile::TempDir,
    child: Child,
    pid: u32,
    lines: Lines<BufReader<ChildStdout>>,
    polls: u64,
}

async fn push_release(ecr: &EcrFixture, config: &Config, t: &str) {
    let env = config.environment("staging").expect("staging");
    // Sentinel last, as CI pushes.
    let mut services: Vec<_> = config.services.iter().collect();
    services.sort_by_key(|s| s.sentinel);
    for s in services {
        for region in &env.registry.regions {
            let at = env.location(s, region);
            ecr.create_repository(&at, false).await;
            ecr.push(&at, &tag(t), &manifest(&format!("{}@{t}", s.name)))
                .await;
        }
    }
}

impl Bench {
    /// Starts moto, the proxy, the fake and `deploy watch`; `None` without moto.
    async fn start(case: &Case) -> Option<Self> {
        let moto = match Moto::start(STAGING) {
            Ok(m) => m,
            Err(unavailable) => {
                eprintln!("skipping: {unavailable}");
                return None;
            }
        };
        let ecr = Arc::new(EcrFixture::new(&[(STAGING, &moto.endpoint)]));
        push_release(&ecr, &case.config, T1).await;
        let wire = Arc::new(Wire::default());
        let proxy = start_proxy(&moto.endpoint, wire.clone()).await;

        let argo = FakeArgo::start().await;
        let staging = case.config.environment("staging").expect("staging");
        for cluster in &case.config.clusters {
            argo.create_application(&app_seed(
                &case.config,
                staging,
                cluster,
                "image.tag",
                &tag(T0),
            ))
            .await;
        }

        let dir = tempfile::Builder::new()
            .prefix("deploy-watch-bench-")
            .tempdir()
            .expect("a temporary directory");
        let config = dir.path().join("deploy.toml");
        std::fs::write(&config, &case.config_text).expect("write deploy.toml");
        let aws = AwsFiles::new(&[("default", &proxy), ("prod", &proxy)], "");
        let stderr = std::fs::File::create(dir.path().join("stderr")).expect("stderr file");
        let mut cmd = Command::new(deploy_binary());
        cmd.arg("--config")
            .arg(&config)
            .args([
                "--plaintext",
                "--output",
                "json",
                "watch",
                "--env",
                "staging",
            ])
            .args(["--interval", "100ms", "--registry-rps"])
            .arg(case.rps.to_string())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .env("USER", "bench")
            .env("ARGOCD_SERVER", argo.server.uri())
            .env("ARGOCD_AUTH_TOKEN", TOKEN)
            .env("AWS_CONFIG_FILE", &aws.config)
            .env("AWS_SHARED_CREDENTIALS_FILE", &aws.credentials)
            .env("AWS_EC2_METADATA_DISABLED", "true");
        for passed in ["MALLOC_ARENA_MAX", "TOKIO_WORKER_THREADS"] {
            if let Some(v) = std::env::var_os(passed) {
                cmd.env(passed, v);
            }
        }
        let mut child = cmd.spawn().expect("starting deploy");
        let pid = child.id().expect("a running child");
        let lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        Some(Self {
            _moto: moto,
            ecr,
            argo,
            wire,
            _aws: aws,
            dir,
            child,
            pid,
            lines,
            polls: 0,
        })
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// The next `poll` line's data; panics on any other line or after [`DEADLINE`].
    async fn next_poll(&mut self) -> Value {
        loop {
            let line = tokio::time::timeout(DEADLINE, self.lines.next_line()).await;
            let line = match line {
                Ok(Ok(Some(l))) => l,
                other => panic!(
                    "no poll line from deploy ({other:?}) after {} polls; stderr:\n{}",
                    self.polls,
                    self.stderr()
                ),
            };
            let v: Value = serde_json::from_str(&line).expect("a JSON line");
            match v["type"].as_str() {
                Some("poll") => {
                    self.polls += 1;
                    return v["data"].clone();
                }
                Some("error") => panic!("deploy reported an error: {line}"),
                _ => {}
            }
        }
    }

    async fn snap(&self) -> Snap {
        let proc = read_proc(self.pid);
        let ops = self.wire.ops.lock().expect("counters").clone();
        let mut argo = BTreeMap::new();
        for r in self
            .argo
            .server
            .received_requests()
            .await
            .expect("request recording is on")
        {
            *argo.entry(argo_kind(&r)).or_default() += 1;
        }
        Snap {
            at: Instant::now(),
            ops,
            connections: self.wire.connections.load(Ordering::Relaxed),
            upstream: Duration::from_nanos(self.wire.upstream_nanos.load(Ordering::Relaxed)),
            argo,
            proc,
        }
    }

    /// SIGTERM, then the `result` line and the exit status.
    async fn stop(mut self) -> (Value, std::process::ExitStatus) {
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        let mut result = Value::Null;
        while let Ok(Ok(Some(line))) = tokio::time::timeout(DEADLINE, self.lines.next_line()).await
        {
            let v: Value = serde_json::from_str(&line).expect("a JSON line");
            if v["type"] == "result" {
                result = v["data"].clone();
            }
        }
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("deploy exits after SIGTERM")
            .expect("wait");
        (result, status)
    }
}

/// The release build of `deploy` that `cargo bench` built for this bench.
fn deploy_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_deploy"))
}

/// `after - before`, per key, without the zeros.
fn diff<K: Ord + Clone>(after: &BTreeMap<K, u64>, before: &BTreeMap<K, u64>) -> BTreeMap<K, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

fn per_cycle<K: std::fmt::Display>(m: &BTreeMap<K, u64>, cycles: u64) -> String {
    if m.is_empty() {
        return "0".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {:.3}", *v as f64 / cycles as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

fn counts<K: std::fmt::Display>(m: &BTreeMap<K, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// CPU time from clock ticks (10 ms each at 100 ticks/s).
fn cpu(ticks: u64, tick: u64) -> String {
    if ticks == 0 {
        format!("< {} ms", 1000 / tick.max(1))
    } else {
        format!("{} ms", ticks * 1000 / tick.max(1))
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// What one case measured, for the summary table.
struct Row {
    label: String,
    ecr_per_cycle: f64,
    argo_per_cycle: f64,
    cpu_ms: f64,
    wall_ms: f64,
    hwm_warm: u64,
    hwm_idle: u64,
    hwm_end: u64,
    rss_end: u64,
    threads: u64,
    release: String,
}

async fn run_case(case: &Case, cycles: u64, tick: u64) -> Option<Row> {
    println!("\n## {}", case.label());
    let started = Instant::now();
    let mut bench = Bench::start(case).await?;
    let spawned = Instant::now();
    let staging = case.config.environment("staging").expect("staging");
    let apps = case.config.clusters.len();

    // Warm-up: the first poll writes T1 everywhere.
    let first = bench.next_poll().await;
    assert_eq!(
        first["release"]["tag"], T1,
        "the first poll finds T1: {first}"
    );
    assert_eq!(
        first["written"].as_array().map_or(0, Vec::len),
        apps,
        "the first poll writes every Application: {first}"
    );
    let first_at = spawned.elapsed();
    let cold = bench.snap().await;
    for _ in 0..WARMUP {
        bench.next_poll().await;
    }

    // The idle cycles.
    let base = bench.snap().await;
    for _ in 0..cycles {
        let p = bench.next_poll().await;
        assert!(
            p["release"].is_null() && p["written"].as_array().is_some_and(Vec::is_empty),
            "an idle poll did something: {p}"
        );
    }
    let idle = bench.snap().await;

    // A new release arrives: pushed while deploy goes on polling.
    let ecr = bench.ecr.clone();
    let config = case.config.clone();
    let push = tokio::spawn(async move { push_release(&ecr, &config, T2).await });
    let mut before = idle.clone();
    let mut polls_waiting = 0;
    let found = loop {
        let p = bench.next_poll().await;
        let now = bench.snap().await;
        if p["release"]["tag"] == T2 {
            break p;
        }
        assert!(p["release"].is_null(), "unexpected release: {p}");
        before = now;
        polls_waiting += 1;
        assert!(polls_waiting < 600, "T2 never found");
    };
    let release = bench.snap().await;
    push.await.expect("the push");
    assert_eq!(
        found["written"].as_array().map_or(0, Vec::len),
        apps,
        "the new release is written everywhere: {found}"
    );

    // Idle again.
    for _ in 0..AFTER {
        let p = bench.next_poll().await;
        assert!(p["release"].is_null(), "an idle poll did something: {p}");
    }
    let after = bench.snap().await;
    let end_proc = read_proc(bench.pid);
    let (result, status) = bench.stop().await;
    assert!(status.success(), "deploy exited with {status}");
    assert_eq!(result["stopped"], true, "the result line: {result}");
    let total_polls = 1 + WARMUP + cycles + polls_waiting + 1 + AFTER;
    assert_eq!(result["polls"], total_polls, "the result line: {result}");

    let n = cycles;
    let ecr_idle = diff(&idle.ops, &base.ops);
    let argo_idle = diff(&idle.argo, &base.argo);
    let ecr_total: u64 = ecr_idle.values().sum();
    let argo_total: u64 = argo_idle.values().sum();
    let cpu_ms =
        (idle.proc.cpu_ticks - base.proc.cpu_ticks) as f64 * 1000.0 / tick as f64 / n as f64;
    let wall = idle.at - base.at;
    let upstream = idle.upstream - base.upstream;
    println!(
        "set-up {:.1} s; first poll (writes T1 to {apps} Applications) {:.0} ms after spawn",
        (spawned - started).as_secs_f64(),
        first_at.as_secs_f64() * 1e3
    );
    println!(
        "start-up + first poll: ECR {} | Argo CD {} | CPU {} | VmHWM {:.1} MiB",
        counts(&cold.ops),
        counts(&cold.argo),
        cpu(cold.proc.cpu_ticks, tick),
        mib(cold.proc.hwm_kib)
    );
    println!(
        "{n} idle cycles (staging registry regions: {}): ECR per cycle: {}; Argo CD per cycle: {}",
        staging.registry.regions.join(", "),
        per_cycle(&ecr_idle, n),
        per_cycle(&argo_idle, n),
    );
    println!(
        "  new TCP connections to the registry: {}; moto time per request {:.2} ms",
        idle.connections - base.connections,
        upstream.as_secs_f64() * 1e3 / ecr_total.max(1) as f64
    );
    println!(
        "  CPU per cycle {cpu_ms:.3} ms (user+sys, {:.3} ms of it sys; {tick} ticks/s); wall per cycle {:.1} ms (interval 100 ms)",
        (idle.proc.sys_ticks - base.proc.sys_ticks) as f64 * 1000.0 / tick as f64 / n as f64,
        wall.as_secs_f64() * 1e3 / n as f64
    );
    let release_ecr = diff(&release.ops, &before.ops);
    let release_argo = diff(&release.argo, &before.argo);
    println!(
        "new release cycle (found {} polls after the push started, {:.0} ms after the poll before): ECR {} | Argo CD {} | CPU {}",
        polls_waiting,
        (release.at - before.at).as_secs_f64() * 1e3,
        counts(&release_ecr),
        counts(&release_argo),
        cpu(release.proc.cpu_ticks - before.proc.cpu_ticks, tick),
    );
    let ecr_after = diff(&after.ops, &release.ops);
    let argo_after = diff(&after.argo, &release.argo);
    println!(
        "{AFTER} idle cycles after it: ECR {} | Argo CD {}",
        counts(&ecr_after),
        counts(&argo_after)
    );
    println!(
        "memory: VmHWM {:.1} MiB after the first poll, {:.1} after warm-up, {:.1} after {n} idle cycles, {:.1} at the end; VmRSS at the end {:.1} MiB ({:.1} anonymous, {:.1} file-backed); {} threads",
        mib(cold.proc.hwm_kib),
        mib(base.proc.hwm_kib),
        mib(idle.proc.hwm_kib),
        mib(end_proc.hwm_kib),
        mib(end_proc.rss_kib),
        mib(end_proc.anon_kib),
        mib(end_proc.file_kib),
        end_proc.threads
    );
    Some(Row {
        label: case.label(),
        ecr_per_cycle: ecr_total as f64 / n as f64,
        argo_per_cycle: argo_total as f64 / n as f64,
        cpu_ms,
        wall_ms: wall.as_secs_f64() * 1e3 / n as f64,
        hwm_warm: base.proc.hwm_kib,
        hwm_idle: idle.proc.hwm_kib,
        hwm_end: end_proc.hwm_kib,
        rss_end: end_proc.rss_kib,
        threads: end_proc.threads,
        release: format!(
            "ECR {}; Argo CD {}",
            release_ecr.values().sum::<u64>(),
            release_argo.values().sum::<u64>()
        ),
    })
}

fn main() {
    // `cargo test --all-targets` runs benches without `--bench`: a smoke run only.
    let full = std::env::args().any(|a| a == "--bench");
    let cycles: u64 = std::env::var("WATCH_CYCLES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(if full { 1_000 } else { 20 });
    let cases: Vec<Case> = std::env::var("WATCH_CASES")
        .unwrap_or_else(|_| {
            if full {
                "3:1000,3:10,100:10".into()
            } else {
                "3:10".into()
            }
        })
        .split(',')
        .map(|c| {
            let (n, rps) = c.trim().split_once(':').expect("CLUSTERS:RPS");
            Case::new(
                n.parse().expect("a number of clusters"),
                rps.parse().expect("a request rate"),
            )
        })
        .collect();
    let tick = clock_ticks();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    println!(
        "# deploy watch: {} ({cycles} idle cycles at --interval 100ms per case)",
        deploy_binary().display()
    );
    let mut rows = Vec::new();
    for case in &cases {
        match rt.block_on(run_case(case, cycles, tick)) {
            Some(row) => rows.push(row),
            None => return,
        }
    }
    println!(
        "\n| case | ECR requests / idle cycle | Argo CD requests / idle cycle | CPU ms / cycle | wall ms / cycle | VmHWM MiB (warm / idle / end) | VmRSS MiB at end | threads | new release cycle |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in rows {
        println!(
            "| {} | {:.3} | {:.3} | {:.3} | {:.1} | {:.1} / {:.1} / {:.1} | {:.1} | {} | {} |",
            r.label,
            r.ecr_per_cycle,
            r.argo_per_cycle,
            r.cpu_ms,
            r.wall_ms,
            mib(r.hwm_warm),
            mib(r.hwm_idle),
            mib(r.hwm_end),
            mib(r.rss_end),
            r.threads,
            r.release
        );
    }
}
