//! Rollback: every Application this run wrote to, and every one an interrupted run of the
//! same release left at it unsoaked ([`Action::Soak`]), goes back to what it ran before,
//! through our own operation, with the wave's timeout each. A stop request does not stop it.

use std::collections::BTreeMap;

use crate::engine::Run;
use crate::engine::app::{Target, Writes};
use deploy_core::model::{Release, Tag};
use deploy_core::plan::promotion::{Action, AppPlan};
use deploy_core::rollout::event::Event;
use deploy_core::rollout::outcome::RollbackResult;
use deploy_core::trail::{AppReport, AppState};

impl Run<'_> {
    /// Returns each of `changed` (written by this run, or soaked again) to its previous
    /// release and records where each ended.
    pub(crate) async fn roll_back(
        &self,
        changed: &[&AppPlan],
        reports: &mut BTreeMap<String, AppReport>,
    ) -> RollbackResult {
        self.emit(Event::RollingBack {
            clusters: changed.iter().map(|a| a.cluster.clone()).collect(),
        });
        let results = futures::future::join_all(changed.iter().map(|a| async move {
            let r = match self.rollback_target(a) {
                Ok((value, to)) => {
                    let r = tokio::time::timeout(self.plan.timeout, self.return_to(a, value, &to))
                        .await
                        .unwrap_or_else(|_| {
                            Err(format!(
                                "timed out after {}",
                                humantime::format_duration(self.plan.timeout)
                            ))
                        });
                    r.map(|()| to.tag)
                }
                Err(reason) => Err(reason),
            };
            (a, r)
        }))
        .await;
        let mut all_ok = true;
        for (a, r) in results {
            let (state, to, ok, reason) = match r {
                Ok(t) => (AppState::RolledBack, t.to_string(), true, None),
                Err(e) => {
                    all_ok = false;
                    (
                        AppState::RollbackFailed(e.clone()),
                        a.live.to_string(),
                        false,
                        Some(e),
                    )
                }
            };
            self.emit(Event::AppRolledBack {
                cluster: a.cluster.clone(),
                to,
                ok,
                reason,
            });
            if let Some(rep) = reports.get_mut(&a.cluster) {
                rep.state = state;
            }
        }
        if all_ok {
            RollbackResult::Done {
                count: changed.len(),
                resumed: changed
                    .iter()
                    .filter(|a| matches!(a.action, Action::Soak { .. }))
                    .count(),
            }
        } else {
            RollbackResult::Incomplete
        }
    }

    /// What `a` returns to: the override of the release it ran before (pinned to the digests
    /// it ran with, when it ran pinned), never the release being rolled back from.
    fn rollback_target<'p>(
        &self,
        a: &'p AppPlan,
    ) -> Result<(&'p deploy_core::port::OverrideValue, Release), String> {
        let previous = a.previous.as_ref().ok_or_else(|| {
            "what it ran before this run is unknown (no single release live, none in its history)"
                .to_owned()
        })?;
        let tag = match previous.tags().as_slice() {
            [t] => Tag::new(t.clone()).map_err(|e| e.to_string())?,
            _ => return Err("its previous override names no single release".to_owned()),
        };
        if tag == self.release.tag {
            return Err(format!(
                "its previous release is {tag} itself: nothing earlier is known"
            ));
        }
        Ok((
            previous,
            Release {
                tag,
                digests: a.previous_digests.clone(),
            },
        ))
    }

    async fn return_to(
        &self,
        a: &AppPlan,
        value: &deploy_core::port::OverrideValue,
        to: &Release,
    ) -> Result<(), String> {
        let argocd = self.ports.argocd;
        let said = |cause: deploy_core::rollout::outcome::Cause| cause.reason(&a.application);
        // Our own operation may still run (a timeout): end it first.
        if self
            .read(&a.application)
            .await
            .map_err(said)?
            .operation_pending
            && argocd.terminate(&a.application).await.is_ok()
        {
            self.wait(&a.application, |app| !app.operation_pending)
                .await
                .map_err(said)?;
        }
        let writes = Writes::default();
        let op_id = format!("{}/rollback/{}", self.opts.run_id, a.cluster);
        let target = Target {
            value: Some(value),
            sync: a.action.syncs(),
            release: to,
            op_id: &op_id,
            cancellable: false,
        };
        let from_release = AppPlan {
            live: deploy_core::model::LiveTag::Tag(self.release.tag.to_string()),
            foreign_operation: None,
            ..a.clone()
        };
        self.bring_to(&from_release, &target, &writes)
            .await
            .map_err(|halt| halt.reason())
    }
}
