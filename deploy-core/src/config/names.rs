//! Names: Kubernetes object names (clusters, environments, and the Applications and
//! ApplicationSets the name templates make), and the templates with their `{placeholders}`.

use toml::Spanned;

use super::Cluster;
use super::field::{Invalid, nonempty};

/// The longest Kubernetes object name (`metadata.name`, a DNS-1123 subdomain).
pub const MAX_NAME_LEN: usize = 253;

/// Why `name` is not a valid Kubernetes object name, or `None` when it is.
///
/// Argo CD Applications and ApplicationSets are Kubernetes objects, so their names must be
/// DNS-1123 subdomains, as the API server checks `metadata.name`: lowercase letters, digits,
/// '-' and '.', each dot-separated part starting and ending with a letter or digit, at most
/// 253 characters. Argo CD's label-based resource tracking (`app.kubernetes.io/instance`)
/// further needs an Application name of at most 63 characters; annotation tracking, the
/// default since Argo CD 3.0, does not. A cluster or environment name goes into these names
/// and into Kubernetes API paths, which kube does not escape, so it is held to the same rule.
pub fn object_name_error(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("it is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Some(format!(
            "it is {} characters long, more than {MAX_NAME_LEN}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-' | '.'))
    {
        return Some(if c.is_ascii_uppercase() {
            format!("{c:?} is uppercase")
        } else {
            format!("{c:?} is not allowed")
        });
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if name
        .split('.')
        .any(|part| !alnum(part.chars().next()) || !alnum(part.chars().last()))
    {
        return Some(
            "it (or a part between dots) does not start and end with a letter or digit".into(),
        );
    }
    None
}

/// The rule of [`object_name_error`] in words, for messages.
pub(super) const OBJECT_NAME_RULE: &str = "use lowercase letters, digits, '-' and '.', starting and ending \
with a letter or digit, at most 253 characters (a Kubernetes object name)";

/// `s` trimmed, or an error when it is not a valid Kubernetes object name.
pub(super) fn object_name(s: &Spanned<String>, what: &str) -> Result<String, Invalid> {
    let v = nonempty(s, what)?;
    match object_name_error(&v) {
        None => Ok(v),
        Some(why) => Err((
            s.span(),
            format!("{what} {v:?} is not a valid Kubernetes name: {why}; {OBJECT_NAME_RULE}"),
        )),
    }
}

/// `s` trimmed, or an error when it is empty or uses a `{placeholder}` not in `allowed`.
pub(super) fn template(
    s: &Spanned<String>,
    what: &str,
    allowed: &[&str],
) -> Result<String, Invalid> {
    let t = nonempty(s, what)?;
    let mut rest = t.as_str();
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            return Err((s.span(), format!("{what} {t:?} has a '{{' without '}}'")));
        };
        let name = &rest[open + 1..open + close];
        if !allowed.contains(&name) {
            let list: Vec<String> = allowed.iter().map(|a| format!("{{{a}}}")).collect();
            return Err((
                s.span(),
                format!(
                    "{what} {t:?} uses unknown placeholder {{{name}}}; use {}",
                    list.join(" ")
                ),
            ));
        }
        rest = &rest[open + close + 1..];
    }
    Ok(t)
}

/// `template` with `{app}`, `{env}` and, given a cluster, `{cluster}` and `{region}` filled in.
pub(super) fn expand(template: &str, app: &str, env: &str, cluster: Option<&Cluster>) -> String {
    let mut out = template.replace("{app}", app).replace("{env}", env);
    if let Some(c) = cluster {
        out = out
            .replace("{cluster}", &c.name)
            .replace("{region}", &c.region);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{check, error_of};

    #[test]
    fn names_must_be_kubernetes_object_names() {
        let long = "x".repeat(254);
        let cases: [(&str, &str, &str); 13] = [
            (
                "name = \"us-east-1\"",
                "name = \"a?dryRun=All\"",
                "cluster name \"a?dryRun=All\" is not a valid Kubernetes name: '?' is not allowed",
            ),
            (
                "name = \"us-east-1\"",
                "name = \"../x\"",
                "cluster name \"../x\" is not a valid Kubernetes name: '/' is not allowed",
            ),
            (
                "name = \"us-east-1\"",
                "name = \"a/b\"",
                "'/' is not allowed",
            ),
            (
                "name = \"us-east-1\"",
                "name = \"UPPER\"",
                "cluster name \"UPPER\" is not a valid Kubernetes name: 'U' is uppercase",
            ),
            (
                "name = \"us-east-1\"",
                "name = \"-east\"",
                "does not start and end with a letter or digit",
            ),
            (
                "name = \"us-east-1\"",
                "name = \"us..east\"",
                "does not start and end with a letter or digit",
            ),
            (
                "name = \"us-east-1\"",
                &format!("name = \"{long}\""),
                "is 254 characters long, more than 253; use lowercase letters",
            ),
            (
                "[environments.prod]",
                "[environments.Prod]",
                "environment name \"Prod\" is not a valid Kubernetes name: 'P' is uppercase",
            ),
            (
                "[environments.prod]",
                "[environments.\"prod/x\"]",
                "environment name \"prod/x\" is not a valid Kubernetes name: '/' is not allowed",
            ),
            (
                "application = \"myapp-prod-{cluster}\"",
                "application = \"myapp_prod_{cluster}\"",
                "names the Application of cluster \"us-west-2\" \"myapp_prod_us-west-2\", which is not a valid Kubernetes name: '_' is not allowed",
            ),
            (
                "application = \"myapp-prod-{cluster}\"",
                &format!("application = \"{}-{{cluster}}\"", "x".repeat(250)),
                "more than 253",
            ),
            (
                "application = \"myapp-prod-{cluster}\"",
                "application = \"{cluster}-{app}-\"",
                "\"us-west-2-myapp-\", which is not a valid Kubernetes name: it (or a part between dots) does not start and end",
            ),
            (
                "application_set = \"myapp-prod\"",
                "application_set = \"{app} {env}\"",
                "names the ApplicationSet \"myapp prod\", which is not a valid Kubernetes name: ' ' is not allowed",
            ),
        ];
        for (from, to, expect) in cases {
            check(from, to, expect);
        }
        // Every error says what to do and where.
        let got = error_of("name = \"us-east-1\"", "name = \"a?dryRun=All\"");
        assert!(got.starts_with("17:8: "), "{got}");
        assert!(
            got.ends_with("at most 253 characters (a Kubernetes object name)"),
            "{got}"
        );
    }

    #[test]
    fn object_names() {
        #[track_caller]
        fn check(name: &str, expect: Option<&str>) {
            let got = object_name_error(name);
            match expect {
                None => assert_eq!(got, None, "{name:?}"),
                Some(want) => assert!(
                    got.as_deref().is_some_and(|g| g.contains(want)),
                    "{name:?}: got {got:?}, want …{want}…"
                ),
            }
        }
        check("a", None);
        check("0", None);
        check("us-west-2", None);
        check("a.b-c.d", None);
        check(&"x".repeat(253), None);
        check(&"x".repeat(254), Some("more than 253"));
        check("", Some("empty"));
        check("A", Some("uppercase"));
        check("a_b", Some("'_' is not allowed"));
        check("a?dryRun=All", Some("'?' is not allowed"));
        check("a#b", Some("'#' is not allowed"));
        check("a%2fb", Some("'%' is not allowed"));
        check("é", Some("not allowed"));
        check("..", Some("start and end"));
        check(".", Some("start and end"));
        check("a.", Some("start and end"));
        check("-a", Some("start and end"));
        check("a-", Some("start and end"));
        check("a.-b", Some("start and end"));
        check("a..b", Some("start and end"));
    }
}
