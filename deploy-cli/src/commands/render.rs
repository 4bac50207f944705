//! `deploy render applicationset` and `deploy render replication`: what to apply (as YAML,
//! Terraform or JSON) so that Argo CD and ECR are as the configuration needs them.

use anyhow::Result;
use deploy_argocd::render::{
    SourceTemplate, application_set, application_set_terraform, application_set_value,
};
use deploy_core::config::Config;
use deploy_core::plan::replication;

use crate::cli::{ManifestFormat, RenderCommand, ReplicationFormat};
use crate::exit::{Exit, UsageError};
use crate::output::Output;

/// Prints the rendered text (stdout), and with `--output json` the document as the result.
pub(crate) fn run(config: &Config, out: Output, command: &RenderCommand) -> Result<Exit> {
    match command {
        RenderCommand::Applicationset { env, format } => {
            let env = config.environment(env).map_err(UsageError)?;
            let source = SourceTemplate::placeholder(config);
            let text = match format {
                ManifestFormat::Yaml => application_set(config, env, &source),
                ManifestFormat::Terraform => application_set_terraform(config, env, &source),
            };
            out.text(text.trim_end());
            out.result(&application_set_value(config, env, &source));
        }
        RenderCommand::Replication { env, format } => {
            let env = config.environment(env).map_err(UsageError)?;
            let replication = replication::required(config, env).map_err(UsageError)?;
            match format {
                ReplicationFormat::Terraform => out.text(replication.terraform().trim_end()),
                ReplicationFormat::Json => {
                    let json = serde_json::to_string_pretty(&replication.json())?;
                    out.text(json);
                    out.note(format!(
                        "save it as replication.json, then: {} (it replaces the registry's whole \
                         replication configuration: merge the rules it already has)",
                        replication.command()
                    ));
                }
            }
            out.result(&serde_json::json!({
                "source": replication.source,
                "account": replication.account,
                "region": replication.region,
                "replication_configuration": replication.json(),
            }));
        }
    }
    Ok(Exit::Success)
}
