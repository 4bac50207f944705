//! JSON values written as Terraform (HCL native syntax), laid out as `terraform fmt` lays
//! them out, so rendered fragments pass `terraform fmt -check` unchanged.
//!
//! The layout follows hclwrite's formatter (`hclwrite/format.go` in hashicorp/hcl):
//! two spaces per nesting level; an attribute whose value fits on its line (`name = "x"`,
//! `list = ["a", "b"]`) takes part in alignment, and the `=` of consecutive such lines lines
//! up one space after the longest name (`formatCells`); a line that opens a multi-line value
//! (`spec = {`), a closing bracket, or a blank line ends the run (`linesForFormat` gives an
//! assignment cell only to lines whose brackets balance). Objects with nested values are
//! written one attribute a line; lists of scalars on one line; lists holding objects one
//! element a line, each followed by a comma.

use serde_json::{Map, Value};

/// One item of a body: an attribute, or a nested block (`rule { ... }`) of a schema that
/// uses blocks rather than object attributes.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// `name = value`.
    Attribute(String, Value),
    /// `name { items }`.
    Block(String, Vec<Item>),
}

/// `resource "<kind>" "<name>" { ... }` with `attributes` as its body, ending in a newline.
pub fn resource(kind: &str, name: &str, attributes: &Map<String, Value>) -> String {
    let items: Vec<Item> = attributes
        .iter()
        .map(|(k, v)| Item::Attribute(k.clone(), v.clone()))
        .collect();
    resource_with(kind, name, &items)
}

/// `resource "<kind>" "<name>" { ... }` with `items` as its body, ending in a newline.
pub fn resource_with(kind: &str, name: &str, items: &[Item]) -> String {
    let mut out = format!(
        "resource {} {} {{\n",
        string(kind),
        string(label(name).as_str())
    );
    items_body(&mut out, items, 1);
    out.push_str("}\n");
    out
}

/// Writes `items` at `level`: runs of one-line attributes aligned, blocks and multi-line
/// values each ending a run.
fn items_body(out: &mut String, items: &[Item], level: usize) {
    let pad = indent(level);
    let mut run = Map::new();
    let flush = |out: &mut String, run: &mut Map<String, Value>| {
        body(out, run, level);
        run.clear();
    };
    for item in items {
        match item {
            Item::Attribute(k, v) if is_inline(v) => {
                run.insert(k.clone(), v.clone());
            }
            Item::Attribute(k, v) => {
                flush(out, &mut run);
                out.push_str(&format!("{pad}{} = ", key(k)));
                block(out, v, level);
                out.push('\n');
            }
            Item::Block(name, inner) => {
                flush(out, &mut run);
                out.push_str(&format!("{pad}{name} {{\n"));
                items_body(out, inner, level + 1);
                out.push_str(&format!("{pad}}}\n"));
            }
        }
    }
    flush(out, &mut run);
}

/// The attributes of `object` as the lines of a body at `level` (no surrounding braces):
/// what goes inside `spec = { ... }`, ready to paste.
pub fn attributes(object: &Map<String, Value>, level: usize) -> String {
    let mut out = String::new();
    body(&mut out, object, level);
    out
}

/// A Terraform resource or block label from any name: letters, digits, `_` and `-` are kept,
/// anything else becomes `_`, and a leading digit gets a `_` before it.
pub fn label(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        out.insert(0, '_');
    }
    out
}

fn indent(level: usize) -> String {
    "  ".repeat(level)
}

/// Writes the attributes of `object` one a line, aligning the `=` of runs of one-line values.
fn body(out: &mut String, object: &Map<String, Value>, level: usize) {
    let pad = indent(level);
    let entries: Vec<(String, &Value)> = object.iter().map(|(k, v)| (key(k), v)).collect();
    let mut i = 0;
    while i < entries.len() {
        if !is_inline(entries[i].1) {
            let (k, v) = &entries[i];
            out.push_str(&format!("{pad}{k} = "));
            block(out, v, level);
            out.push('\n');
            i += 1;
            continue;
        }
        let run_end = (i..entries.len())
            .find(|&j| !is_inline(entries[j].1))
            .unwrap_or(entries.len());
        let width = entries[i..run_end]
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        for (k, v) in &entries[i..run_end] {
            let gap = " ".repeat(width - k.chars().count());
            out.push_str(&format!("{pad}{k}{gap} = {}\n", inline(v)));
        }
        i = run_end;
    }
}

/// A multi-line value (an object, or a list holding objects or lists), starting after `= `
/// and ending at its closing bracket (no newline).
fn block(out: &mut String, value: &Value, level: usize) {
    match value {
        Value::Object(map) => {
            out.push_str("{\n");
            body(out, map, level + 1);
            out.push_str(&format!("{}}}", indent(level)));
        }
        Value::Array(items) => {
            out.push_str("[\n");
            let pad = indent(level + 1);
            for item in items {
                out.push_str(&pad);
                if is_inline(item) {
                    out.push_str(&inline(item));
                } else {
                    block(out, item, level + 1);
                }
                out.push_str(",\n");
            }
            out.push_str(&format!("{}]", indent(level)));
        }
        scalar => out.push_str(&inline(scalar)),
    }
}

/// Whether `value` is written on one line: scalars, empty objects, lists of scalars.
fn is_inline(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items
            .iter()
            .all(|v| !matches!(v, Value::Object(_) | Value::Array(_))),
        _ => true,
    }
}

fn inline(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(inline).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(_) => "{}".into(),
    }
}

/// An object key: bare when it is an identifier, else a quoted string.
fn key(k: &str) -> String {
    let identifier = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if identifier { k.to_owned() } else { string(k) }
}

/// A quoted template string: `"` and `\` escaped, and `${` / `%{` doubled so that Terraform
/// does not read them as interpolation or a directive.
fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' | '%' if chars.peek() == Some(&'{') => {
                out.push(c);
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[track_caller]
    fn check(value: Value, expect: &str) {
        let Value::Object(map) = value else {
            panic!("an object")
        };
        assert_eq!(resource("t", "n", &map), expect);
    }

    #[test]
    fn layout() {
        check(json!({}), "resource \"t\" \"n\" {\n}\n");
        check(
            json!({ "a": 1, "long_name": "x", "l": ["p", "q"] }),
            "resource \"t\" \"n\" {\n  a         = 1\n  l         = [\"p\", \"q\"]\n  long_name = \"x\"\n}\n",
        );
        // A multi-line value ends the alignment run; the next run aligns on its own.
        check(
            json!({ "a": true, "m": { "k/x": "v", "kk": "w" }, "zz": null }),
            "resource \"t\" \"n\" {\n  a = true\n  m = {\n    \"k/x\" = \"v\"\n    kk    = \"w\"\n  }\n  zz = null\n}\n",
        );
        check(
            json!({ "rules": [{ "a": "b" }], "e": {} }),
            "resource \"t\" \"n\" {\n  e = {}\n  rules = [\n    {\n      a = \"b\"\n    },\n  ]\n}\n",
        );
        check(
            json!({ "s": "${x} %{y} {{.cluster}} \"q\" \\" }),
            "resource \"t\" \"n\" {\n  s = \"$${x} %%{y} {{.cluster}} \\\"q\\\" \\\\\"\n}\n",
        );
    }

    #[test]
    fn blocks() {
        let items = vec![
            Item::Attribute("a".into(), json!("x")),
            Item::Block(
                "rule".into(),
                vec![
                    Item::Block(
                        "destination".into(),
                        vec![
                            Item::Attribute("region".into(), json!("us-east-1")),
                            Item::Attribute("registry_id".into(), json!("2")),
                        ],
                    ),
                    Item::Attribute("n".into(), json!(1)),
                ],
            ),
        ];
        assert_eq!(
            resource_with("t", "my.name", &items),
            "resource \"t\" \"my_name\" {\n  a = \"x\"\n  rule {\n    destination {\n      region      = \"us-east-1\"\n      registry_id = \"2\"\n    }\n    n = 1\n  }\n}\n"
        );
    }

    #[test]
    fn labels() {
        assert_eq!(label("myapp-prod"), "myapp-prod");
        assert_eq!(label("a.b/c"), "a_b_c");
        assert_eq!(label("1x"), "_1x");
    }
}
