//! Faults injected at the HTTP level ([`super::FakeArgo::inject`]): what they answer, for which
//! requests, and for how long.

use std::time::{Duration, Instant};

use serde_json::json;
use wiremock::ResponseTemplate;

use super::objects::error;

/// What an injected fault answers ([`FakeArgo::inject`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// 503, gRPC code 14 (Unavailable): argocd-server restarting (grpc-go's "transport is
    /// closing" while its listener shuts down).
    Unavailable,
    /// 401, gRPC code 16 (Unauthenticated): the token expired, in the words of Argo CD's
    /// session manager ("invalid session: token has invalid claims: token is expired").
    Unauthenticated,
}

/// Which requests for one Application an injected fault answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requests {
    /// `GET /api/v1/applications/{name}` and the watch stream
    /// `GET /api/v1/stream/applications?name={name}`.
    Reads,
    /// `PATCH /api/v1/applications/{name}` (the override, the annotations, the REST lock).
    Patches,
}

/// How long an injected fault lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lasts {
    /// Until [`FakeArgo::clear`].
    UntilCleared,
    /// This long from its first answer on the wall clock (an outage that begins when the
    /// request comes, so the test needs not time the injection to the request).
    For(Duration),
    /// This many answers.
    Answers(u32),
}

/// A fault injected at the HTTP level: requests of one kind for one Application get an
/// error answer instead of being served.
#[derive(Debug, Clone)]
pub(super) struct Fault {
    pub(super) application: String,
    pub(super) requests: Requests,
    pub(super) outage: Outage,
    pub(super) lasts: Lasts,
    pub(super) first_answer: Option<Instant>,
    pub(super) answered: u32,
}

impl Fault {
    /// Whether the fault is used up at `now`.
    pub(super) fn over(&self, now: Instant) -> bool {
        match self.lasts {
            Lasts::UntilCleared => false,
            Lasts::For(d) => self
                .first_answer
                .is_some_and(|t| now.saturating_duration_since(t) >= d),
            Lasts::Answers(n) => self.answered >= n,
        }
    }
}

impl Outage {
    fn status_code(self) -> (u16, i32, &'static str, &'static str) {
        match self {
            Self::Unavailable => (503, 14, "Service Unavailable", "transport is closing"),
            Self::Unauthenticated => (
                401,
                16,
                "Unauthorized",
                "invalid session: token has invalid claims: token is expired",
            ),
        }
    }

    /// The answer to a unary request: grpc-gateway's error body `{"error","code","message",
    /// "details"}` (`runtimeError` in Argo CD's swagger.json) with the HTTP status of the gRPC
    /// code (`runtime.HTTPStatusFromCode`: Unavailable 503, Unauthenticated 401).
    pub(super) fn unary(self) -> ResponseTemplate {
        let (status, code, _, message) = self.status_code();
        error(status, code, message)
    }

    /// The answer to a watch stream. grpc-gateway's `ForwardResponseStream` meets the error
    /// before it wrote anything, so `handleForwardResponseStreamError` (runtime/handler.go of
    /// grpc-gateway v1, which argocd-server uses) sets the status of the gRPC code and writes
    /// one error chunk, `{"error": runtimeStreamError}`, then ends the body.
    pub(super) fn stream(self) -> ResponseTemplate {
        let (status, code, http_status, message) = self.status_code();
        let chunk = json!({ "error": {
            "grpc_code": code, "http_code": status, "message": message,
            "http_status": http_status, "details": []
        }});
        ResponseTemplate::new(status).set_body_raw(format!("{chunk}\n"), "application/json")
    }
}
