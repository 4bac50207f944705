//! A check's `success` and `failure` conditions: a [`Condition`] over one measurement's
//! values, compiled once when the file is parsed.
//!
//! Conditions are written in expr, the language of Argo Rollouts, Kargo and GitOps Promoter
//! conditions, so a template's `successCondition` can be carried over: `result < 0.01`,
//! `result[0] < 0.01`, `all(result, # < 0.01)`, `len(result) > 0`. `result` is the value when
//! the measurement has one series, and the list of values otherwise. Besides expr's
//! built-ins, `isNaN(x)` and `isInf(x)` are available, as in Rollouts.

use std::fmt;
use std::sync::{Arc, LazyLock};

use serde::{Deserialize, Serialize};

/// A condition over a measurement (`result < 0.01`), compiled once.
#[derive(Clone)]
pub struct Condition {
    text: String,
    program: Arc<expr::Program>,
}

/// The expr environment: the base built-ins plus `isNaN` and `isInf`.
static EXPR: LazyLock<expr::Environment<'static>> = LazyLock::new(|| {
    let mut env = expr::Environment::new();
    let float_test = |name: &str, args: &[expr::Value], f: fn(f64) -> bool| match args {
        [expr::Value::Float(x)] => Ok(expr::Value::Bool(f(*x))),
        [expr::Value::Integer(_)] => Ok(expr::Value::Bool(false)),
        _ => Err(expr::Error::ExprError(format!("{name}() takes one number"))),
    };
    env.add_function("isNaN", move |c| float_test("isNaN", &c.args, f64::is_nan));
    env.add_function("isInf", move |c| {
        float_test("isInf", &c.args, f64::is_infinite)
    });
    env
});

impl Condition {
    /// Compiles `text`; the error says why it is not an expression.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("the condition is empty".into());
        }
        let program = expr::compile(text).map_err(|e| one_line(&e.to_string()))?;
        let c = Self {
            text: text.to_owned(),
            program: Arc::new(program),
        };
        // Catch what compiles but cannot mean a verdict (`result +`, `"x"`): evaluate it once
        // on a typical value; only a type error is reported, not a failed lookup such as
        // `result[1]`, which depends on the data.
        if let Ok(v) = c.value(&[0.0])
            && !matches!(v, expr::Value::Bool(_))
        {
            return Err(format!("it gives {v}, not true or false"));
        }
        Ok(c)
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn value(&self, values: &[f64]) -> Result<expr::Value, String> {
        let result = match values {
            [one] => expr::Value::Float(*one),
            many => expr::Value::Array(many.iter().map(|v| expr::Value::Float(*v)).collect()),
        };
        let mut ctx = expr::Context::default();
        ctx.insert("result", result);
        EXPR.run(&self.program, &ctx)
            .map_err(|e| one_line(&e.to_string()))
    }

    /// Whether the condition holds for `values`; an error when it cannot be evaluated (e.g.
    /// `result[0]` of an empty list) or is not true or false.
    pub fn holds(&self, values: &[f64]) -> Result<bool, String> {
        match self.value(values)? {
            expr::Value::Bool(b) => Ok(b),
            other => Err(format!("{:?} gives {other}, not true or false", self.text)),
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Condition").field(&self.text).finish()
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq for Condition {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Condition {}

impl Serialize for Condition {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `condition` on `result` gives `expect`: Some(bool), or None for an error.
    #[track_caller]
    fn check(result: &[f64], condition: &str, expect: Option<bool>) {
        let c = Condition::parse(condition).unwrap();
        let got = c.holds(result);
        assert_eq!(
            got.as_ref().ok().copied(),
            expect,
            "{condition} on {result:?}: {got:?}"
        );
    }

    #[test]
    fn conditions() {
        let nan = f64::NAN;
        check(&[0.001], "result < 0.01", Some(true));
        check(&[0.5], "result < 0.01", Some(false));
        check(&[0.001], "result[0] < 0.01", None);
        check(&[0.001, 0.002], "result[0] < 0.01", Some(true));
        check(&[0.001, 0.2], "all(result, # < 0.01)", Some(false));
        check(&[0.001, 0.002], "all(result, # < 0.01)", Some(true));
        check(&[0.001, 0.2], "any(result, # > 0.1)", Some(true));
        check(&[0.001, 0.2], "len(result) == 2", Some(true));
        check(&[], "len(result) == 0", Some(true));
        check(&[], "result[0] < 0.01", None);
        check(&[], "all(result, # < 0.01)", Some(true));
        check(&[nan], "result < 0.01", Some(false));
        check(&[nan], "result >= 0.01", Some(false));
        check(&[nan], "isNaN(result)", Some(true));
        check(&[1.0], "isNaN(result)", Some(false));
        check(&[f64::INFINITY], "isInf(result)", Some(true));
        check(&[nan, 0.0], "any(result, isNaN(#))", Some(true));
        check(&[0.0], "result == 0", Some(true));
        check(&[1.0, 0.0], "result[0] == 1 && result[1] == 0", Some(true));
        check(&[3.0], "result >= 1 and result <= 5", Some(true));
        check(&[0.0, 1.0], "none(result, # == 1)", Some(false));
    }

    #[test]
    fn bad_conditions_are_rejected_when_parsed() {
        for (bad, says) in [
            ("", "empty"),
            ("result <", ""),
            ("result + 1", "not true or false"),
            ("\"yes\"", "not true or false"),
        ] {
            let e = Condition::parse(bad).expect_err(bad);
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        assert!(
            Condition::parse("result[1] < 2").is_ok(),
            "depends on the data"
        );
    }
}
