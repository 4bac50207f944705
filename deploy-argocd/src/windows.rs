//! Sync windows on the wire: `v1alpha1SyncWindow` (an AppProject's `spec.syncWindows[]`, with
//! `timeZone`) and `applicationApplicationSyncWindowsResponse` (`GET
//! /api/v1/applications/{name}/syncwindows`, whose windows have no `timeZone`: upstream's
//! `convertSyncWindows` copies kind, schedule, duration and manualSync only) to the port's
//! [`AppWindows`], and the matching of a project's windows to an Application as argo-cd's
//! `SyncWindows.Matches` does (`pkg/apis/application/v1alpha1`), for `--core` and for REST
//! when the token may read the AppProject.

use deploy_core::Error;
use deploy_core::window::{Answer, WindowTarget};
use deploy_core::window::{AppWindows, SyncWindow};
use serde_json::Value;

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// One `v1alpha1SyncWindow` (or `applicationApplicationSyncWindow`, which has only `kind`,
/// `schedule`, `duration` and `manualSync`).
pub fn window(v: &Value) -> deploy_core::Result<SyncWindow> {
    let kind = v["kind"].as_str().unwrap_or_default();
    Ok(SyncWindow {
        kind: kind
            .parse()
            .map_err(|e: String| Error::invalid(format!("sync window: {e}")))?,
        schedule: v["schedule"].as_str().unwrap_or_default().to_owned(),
        duration: v["duration"].as_str().unwrap_or_default().to_owned(),
        manual_sync: v["manualSync"].as_bool().unwrap_or(false),
        time_zone: v["timeZone"]
            .as_str()
            .filter(|z| !z.is_empty())
            .map(str::to_owned),
        applications: strings(&v["applications"]),
        namespaces: strings(&v["namespaces"]),
        clusters: strings(&v["clusters"]),
        and_operator: v["andOperator"].as_bool().unwrap_or(false),
    })
}

/// The answer of `GET /api/v1/applications/{name}/syncwindows`: Argo CD's `canSync` and
/// `activeWindows`, and the assigned windows without their zones (`zoned` false).
pub fn response(v: &Value) -> deploy_core::Result<AppWindows> {
    let list = |key: &str| -> deploy_core::Result<Vec<SyncWindow>> {
        v[key]
            .as_array()
            .map(|a| a.iter().map(window).collect::<Result<Vec<_>, _>>())
            .transpose()
            .map(Option::unwrap_or_default)
    };
    // Upstream always sets `canSync`; an answer without it is not one to act on.
    let can_sync = v["canSync"].as_bool().ok_or_else(|| {
        Error::invalid("the syncwindows answer of Argo CD has no canSync".to_owned())
    })?;
    Ok(AppWindows {
        assigned: list("assignedWindows")?,
        zoned: false,
        answer: Some(Answer {
            can_sync,
            active: list("activeWindows")?,
        }),
    })
}

/// The windows of `project` (an AppProject object) that apply to `application` (an
/// Application object): `proj.Spec.SyncWindows.Matches(app)`.
pub fn matching(project: &Value, application: &Value) -> deploy_core::Result<Vec<SyncWindow>> {
    let dst = &application["spec"]["destination"];
    let target = WindowTarget {
        name: application["metadata"]["name"].as_str().unwrap_or_default(),
        namespace: dst["namespace"].as_str().unwrap_or_default(),
        cluster_name: dst["name"].as_str().unwrap_or_default(),
        cluster_server: dst["server"].as_str().unwrap_or_default(),
    };
    let mut out = Vec::new();
    for w in project["spec"]["syncWindows"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let w = window(w)?;
        if w.matches(&target) {
            out.push(w);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_projects_windows_match_as_upstream() {
        let project = json!({ "spec": { "syncWindows": [
            { "kind": "deny", "schedule": "0 22 * * *", "duration": "1h", "applications": ["*-prod-*"], "timeZone": "Europe/Berlin" },
            { "kind": "allow", "schedule": "0 8 * * *", "duration": "10h", "clusters": ["eu-*"], "manualSync": true },
            { "kind": "deny", "schedule": "* * * * *", "duration": "1h", "namespaces": ["other"] }
        ]}});
        let app = json!({ "metadata": { "name": "myapp-prod-us-east-1" },
            "spec": { "destination": { "name": "us-east-1", "namespace": "myapp" } } });
        let got = matching(&project, &app).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].time_zone.as_deref(), Some("Europe/Berlin"));
        let eu = json!({ "metadata": { "name": "x" },
            "spec": { "destination": { "name": "eu-west-1", "namespace": "myapp" } } });
        let got = matching(&project, &eu).unwrap();
        assert_eq!(got.len(), 1);
        assert!(got[0].manual_sync);
    }

    #[test]
    fn the_rest_answer_is_read() {
        let got = response(&json!({
            "assignedWindows": [{ "kind": "deny", "schedule": "0 22 * * *", "duration": "1h" }],
            "activeWindows": [{ "kind": "deny", "schedule": "0 22 * * *", "duration": "1h" }],
            "canSync": false
        }))
        .unwrap();
        assert_eq!(got.assigned.len(), 1);
        assert!(!got.zoned);
        let answer = got.answer.unwrap();
        assert!(!answer.can_sync);
        assert_eq!(answer.active.len(), 1);
        // No windows: upstream leaves both lists out (convertSyncWindows answers nil).
        let empty = response(&json!({ "canSync": true })).unwrap();
        assert!(empty.assigned.is_empty() && empty.answer.is_some_and(|a| a.can_sync));
        assert!(response(&json!({})).is_err());
        assert!(
            response(&json!({ "canSync": true, "assignedWindows": [{ "kind": "maybe" }] }))
                .is_err()
        );
    }
}
