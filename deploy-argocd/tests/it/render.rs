//! `deploy render applicationset`: the rendered manifest validates against the upstream
//! ApplicationSet CRD schema for every environment of the example configuration, and the
//! Applications it would generate validate against the Application CRD schema.

use deploy_argocd::render::{self, SourceTemplate};
use deploy_core::config::Config;
use serde_json::Value;

/// The example `deploy.toml` of the workspace.
pub fn example_config() -> Config {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/deploy.toml");
    let text = std::fs::read_to_string(path).expect("examples/deploy.toml");
    Config::parse(path, &text).expect("the example parses")
}

/// A validator for the `openAPIV3Schema` of the CRD in `tests/fixtures/argocd/<file>`.
pub fn crd_validator(file: &str) -> jsonschema::Validator {
    let path = format!(
        "{}/tests/fixtures/argocd/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let crd: Value = serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    assert!(schema.is_object(), "{path}: no openAPIV3Schema");
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .build(schema)
        .unwrap_or_else(|e| panic!("{path}: schema does not compile: {e}"))
}

fn errors(validator: &jsonschema::Validator, value: &Value) -> Vec<String> {
    validator
        .iter_errors(value)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect()
}

#[test]
fn rendered_application_sets_validate_against_the_crd() {
    let config = example_config();
    let validator = crd_validator("applicationset-crd.yaml");
    for env in config.environments.values() {
        let yaml = render::application_set(&config, env, &SourceTemplate::placeholder(&config));
        let value: Value = serde_norway::from_str(&yaml).expect("the output is YAML");
        let found = errors(&validator, &value);
        assert!(found.is_empty(), "{}: {found:#?}\n{yaml}", env.name);
        assert_eq!(value["kind"], "ApplicationSet");
        let elements = value["spec"]["generators"][0]["list"]["elements"]
            .as_array()
            .unwrap();
        assert_eq!(elements.len(), config.clusters.len());
    }
}

#[test]
fn the_validator_rejects_what_the_crd_forbids() {
    // Guards the test above against a validator that accepts anything.
    let config = example_config();
    let validator = crd_validator("applicationset-crd.yaml");
    let env = &config.environments["prod"];
    let mut value =
        render::application_set_value(&config, env, &SourceTemplate::placeholder(&config));
    value["spec"]["ignoreApplicationDifferences"][0]["jsonPointers"] =
        Value::String("/spec".into());
    assert!(!errors(&validator, &value).is_empty());
    let mut value =
        render::application_set_value(&config, env, &SourceTemplate::placeholder(&config));
    value["spec"].as_object_mut().unwrap().remove("template");
    assert!(!errors(&validator, &value).is_empty());
}

#[test]
fn generated_applications_validate_and_carry_the_configured_names() {
    // What the ApplicationSet controller would generate: the template with each element's
    // parameters substituted (goTemplate `{{.cluster}}` / `{{.region}}`).
    let config = example_config();
    let validator = crd_validator("application-crd.yaml");
    for env in config.environments.values() {
        let set =
            render::application_set_value(&config, env, &SourceTemplate::placeholder(&config));
        for cluster in &config.clusters {
            let text = set["spec"]["template"]
                .to_string()
                .replace("{{.cluster}}", &cluster.name)
                .replace("{{.region}}", &cluster.region);
            let template: Value = serde_json::from_str(&text).unwrap();
            let app = serde_json::json!({
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "Application",
                "metadata": template["metadata"],
                "spec": template["spec"],
            });
            let found = errors(&validator, &app);
            assert!(found.is_empty(), "{}: {found:#?}", env.name);
            assert_eq!(
                app["metadata"]["name"],
                config.application_name(env, cluster)
            );
            assert_eq!(app["spec"]["destination"]["name"], cluster.name);
        }
    }
}
