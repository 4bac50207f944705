//! Transport rules of the REST client: which redirects it follows, and when the bearer token
//! would cross a network in clear or to an unverified server.
//!
//! reqwest follows up to 10 redirects by default and drops `Authorization` only when the host
//! or port changes (`reqwest::redirect::remove_sensitive_headers`), so an `https` → `http`
//! redirect to the same host and an explicit port would carry the token in clear. The client
//! therefore sets `https_only` when the server is `https` (reqwest then refuses any `http` URL,
//! redirects included) and installs [`redirect_policy`], which refuses a downgrade in any
//! chain (also in plaintext mode, e.g. `http` → `https` → `http`) and follows at most
//! [`MAX_REDIRECTS`].

use std::net::IpAddr;

use deploy_core::config::ArgoCdConfig;
use reqwest::Url;
use reqwest::redirect::{Attempt, Policy};

use super::server_url;

/// The most redirects one request follows (Argo CD itself sends none; an ingress may send one
/// or two, e.g. to add a trailing slash or upgrade to https).
pub(crate) const MAX_REDIRECTS: usize = 5;

/// Why a redirect from `previous` (oldest first) to `next` is refused, if it is.
pub(crate) fn refused_redirect(next: &Url, previous: &[Url]) -> Option<String> {
    // `previous` holds the original URL and every redirect followed so far.
    if previous.len() > MAX_REDIRECTS {
        return Some(format!(
            "more than {MAX_REDIRECTS} redirects; point the Argo CD server setting at the final URL"
        ));
    }
    if next.scheme() != "https" && previous.iter().any(|u| u.scheme() == "https") {
        return Some(format!(
            "refusing a redirect from https to {next}: the token would travel in clear; \
             point the Argo CD server setting at the https URL the server answers on"
        ));
    }
    None
}

/// The client's redirect policy: [`refused_redirect`] decides.
pub(crate) fn redirect_policy() -> Policy {
    Policy::custom(|attempt: Attempt<'_>| {
        match refused_redirect(attempt.url(), attempt.previous()) {
            Some(reason) => attempt.error(reason),
            None => attempt.follow(),
        }
    })
}

/// True for `localhost` (and `*.localhost`, RFC 6761), 127.0.0.0/8 and ::1: traffic that
/// does not leave the machine.
pub(crate) fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    // `host_str` writes an IPv6 address in brackets.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => {
            let d = host.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
    }
}

/// The warning to show when the client would send the Argo CD token over the network in
/// clear: the server is `http://` (or `--plaintext`) and not a loopback address. `None` when
/// TLS is on, the server is local, or no (valid) server is configured (the client's
/// constructor reports that). The client logs it at `warn` once per server; a CLI that hides
/// warnings (`-q`) should print this itself.
pub fn cleartext_warning(config: &ArgoCdConfig) -> Option<String> {
    let url = server_url(config.server.as_deref()?, config.plaintext).ok()?;
    (url.scheme() == "http" && !is_loopback(&url)).then(|| {
        format!(
            "the Argo CD token is sent in clear to {} (plaintext http): anyone on the network path \
             can read and reuse it; use https (drop --plaintext / the http:// scheme)",
            url.host_str().unwrap_or("the server")
        )
    })
}

/// The warning to show when TLS certificate verification is off (`--insecure` with an https
/// server), for a CLI that hides warnings; the client logs it at `warn` too.
pub fn insecure_warning(config: &ArgoCdConfig) -> Option<String> {
    let url = server_url(config.server.as_deref()?, config.plaintext).ok()?;
    (config.insecure && url.scheme() == "https").then(|| {
        "TLS certificate verification of the Argo CD server is off (insecure); \
         anyone on the path can read the token"
            .to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn a_downgrade_is_refused_anywhere_in_the_chain() {
        let check = |next: &str, previous: &[&str], refused: bool| {
            let previous: Vec<Url> = previous.iter().map(|p| url(p)).collect();
            assert_eq!(
                refused_redirect(&url(next), &previous).is_some(),
                refused,
                "{previous:?} -> {next}"
            );
        };
        // Same host, explicit port: reqwest would keep the Authorization header.
        check(
            "http://argocd.example.com:443/api",
            &["https://argocd.example.com:443/api"],
            true,
        );
        check("http://b.example.com/", &["https://a.example.com/"], true);
        check("http://h/", &["http://h/", "https://h/"], true);
        check("https://h/", &["http://h/"], false);
        check("https://h/x/", &["https://h/x"], false);
        check("http://127.0.0.1:9/b", &["http://127.0.0.1:9/a"], false);
        let many: Vec<&str> = vec!["https://h/"; MAX_REDIRECTS];
        check("https://h/", &many, false);
        let too_many: Vec<&str> = vec!["https://h/"; MAX_REDIRECTS + 1];
        check("https://h/", &too_many, true);
    }

    #[test]
    fn loopback_hosts() {
        let check = |s: &str, want: bool| assert_eq!(is_loopback(&url(s)), want, "{s}");
        check("http://localhost:8080", true);
        check("http://LOCALHOST.", true);
        check("http://argocd.localhost", true);
        check("http://127.0.0.1", true);
        check("http://127.9.8.7:80", true);
        check("http://[::1]:8080", true);
        check("http://[::ffff:127.0.0.1]", true);
        check("http://10.0.0.1", false);
        check("http://localhost.example.com", false);
        check("http://[::2]", false);
    }

    #[test]
    fn the_cleartext_warning() {
        let check = |server: Option<&str>, plaintext: bool, warns: bool| {
            let config = ArgoCdConfig {
                server: server.map(Into::into),
                plaintext,
                insecure: false,
                namespace: "argocd".into(),
            };
            let got = cleartext_warning(&config);
            assert_eq!(
                got.is_some(),
                warns,
                "{server:?} plaintext={plaintext}: {got:?}"
            );
            if let Some(w) = got {
                assert!(w.contains("in clear") && w.contains("https"), "{w}");
            }
        };
        check(Some("http://argocd.example.com"), false, true);
        check(Some("argocd.example.com"), true, true);
        check(Some("https://argocd.example.com"), true, true);
        check(Some("argocd.example.com"), false, false);
        check(Some("https://10.1.2.3"), false, false);
        check(Some("http://127.0.0.1:8080"), false, false);
        check(Some("localhost:8080"), true, false);
        check(Some("http://[::1]:8080"), false, false);
        check(None, true, false);
        check(Some("ftp://x"), false, false);
    }

    #[test]
    fn the_insecure_warning() {
        let config = |server: &str, plaintext: bool, insecure: bool| ArgoCdConfig {
            server: Some(server.into()),
            plaintext,
            insecure,
            namespace: "argocd".into(),
        };
        assert!(insecure_warning(&config("argocd.example.com", false, true)).is_some());
        assert!(insecure_warning(&config("argocd.example.com", false, false)).is_none());
        // No TLS, nothing to verify: the cleartext warning covers it.
        assert!(insecure_warning(&config("argocd.example.com", true, true)).is_none());
    }
}
