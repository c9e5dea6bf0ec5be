//! Between the client's JSON and the core's [`Meta`]: a join's `meta`, a `presence:update`
//! payload, and the metas of `presence_state`/`presence_diff`.
//!
//! The core keeps its own [`MetaValue`] (node-to-node payloads use bincode, which cannot decode
//! "any" values). Numbers become `Int` when the JSON literal is an integer that fits an `i64`,
//! `Float` otherwise (so `u64::MAX` turns into a float, as JavaScript would read it anyway).
//! Keys come back sorted: a [`Meta`] is a sorted map.

use roster_core::{Meta, MetaValue};
use serde::ser::{Serialize, Serializer};
use serde_json::{Map, Number, Value};

/// Why a JSON value cannot be a meta. Nothing was converted; the join or update is refused
/// (`bad_request`) and the presence is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// A meta is a JSON object; this was another kind of value (`an array`, `a string`, ...).
    #[error("a meta must be a JSON object, got {found}")]
    NotAnObject {
        /// What was given instead, with its article (`an array`, `null`, ...).
        found: &'static str,
    },
}

/// A JSON object as a [`Meta`]; any other value is refused.
pub fn meta_from_json(value: &Value) -> Result<Meta, MetaError> {
    match value {
        Value::Object(map) => Ok(map_from_json(map)),
        other => Err(MetaError::NotAnObject { found: kind_of(other) }),
    }
}

/// A [`Meta`] as a JSON object.
pub fn meta_to_json(meta: &Meta) -> Value {
    Value::Object(meta.iter().map(|(k, v)| (k.clone(), meta_value_to_json(v))).collect())
}

/// Any JSON value as a [`MetaValue`]; this cannot fail.
pub fn meta_value_from_json(value: &Value) -> MetaValue {
    match value {
        Value::Null => MetaValue::Null,
        Value::Bool(b) => MetaValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => MetaValue::Int(i),
            // A float literal, or an integer beyond i64 (serde_json holds those as u64).
            None => MetaValue::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => MetaValue::Str(s.clone()),
        Value::Array(items) => MetaValue::List(items.iter().map(meta_value_from_json).collect()),
        Value::Object(map) => MetaValue::Map(map_from_json(map)),
    }
}

/// A [`MetaValue`] as JSON. A non-finite float (which JSON cannot hold and no client can have
/// sent) becomes `null`.
pub fn meta_value_to_json(value: &MetaValue) -> Value {
    match value {
        MetaValue::Null => Value::Null,
        MetaValue::Bool(b) => Value::Bool(*b),
        MetaValue::Int(i) => Value::Number((*i).into()),
        MetaValue::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        MetaValue::Str(s) => Value::String(s.clone()),
        MetaValue::List(items) => Value::Array(items.iter().map(meta_value_to_json).collect()),
        MetaValue::Map(meta) => meta_to_json(meta),
    }
}

/// A [`MetaValue`] serialized as plain JSON straight to the writer (no [`Value`] built), as
/// [`meta_value_to_json`] would make it.
pub struct MetaValueJson<'a>(pub &'a MetaValue);

impl Serialize for MetaValueJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            MetaValue::Null => s.serialize_unit(),
            MetaValue::Bool(b) => s.serialize_bool(*b),
            MetaValue::Int(i) => s.serialize_i64(*i),
            MetaValue::Float(f) if f.is_finite() => s.serialize_f64(*f),
            MetaValue::Float(_) => s.serialize_unit(),
            MetaValue::Str(x) => s.serialize_str(x),
            MetaValue::List(items) => s.collect_seq(items.iter().map(MetaValueJson)),
            MetaValue::Map(map) => s.collect_map(map.iter().map(|(k, v)| (k, MetaValueJson(v)))),
        }
    }
}

fn map_from_json(map: &Map<String, Value>) -> Meta {
    map.iter().map(|(k, v)| (k.clone(), meta_value_from_json(v))).collect()
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_meta_round_trips() {
        let value = json!({
            "name": "Ada",
            "age": 36,
            "score": -1.5,
            "admin": false,
            "avatar": null,
            "tags": ["x", 1, 2.5, true, null, {"deep": [[]]}],
            "device": {"kind": "phone", "os": {"name": "ios", "major": 17}},
            "empty": {}
        });
        let meta = meta_from_json(&value).unwrap();
        assert_eq!(meta["age"], MetaValue::Int(36));
        assert_eq!(meta["score"], MetaValue::Float(-1.5));
        assert_eq!(meta["avatar"], MetaValue::Null);
        let MetaValue::Map(device) = &meta["device"] else { panic!("device is {:?}", meta["device"]) };
        assert_eq!(device["kind"], MetaValue::Str("phone".to_owned()));
        assert_eq!(meta_to_json(&meta), value);
    }

    #[test]
    fn integers_stay_integers_and_float_literals_stay_floats() {
        let meta = meta_from_json(&json!({"min": i64::MIN, "max": i64::MAX, "one": 1.0, "zero": 0})).unwrap();
        assert_eq!(meta["min"], MetaValue::Int(i64::MIN));
        assert_eq!(meta["max"], MetaValue::Int(i64::MAX));
        assert_eq!(meta["one"], MetaValue::Float(1.0));
        assert_eq!(meta["zero"], MetaValue::Int(0));
        assert_eq!(
            meta_to_json(&meta).to_string(),
            format!(r#"{{"max":{},"min":{},"one":1.0,"zero":0}}"#, i64::MAX, i64::MIN)
        );
    }

    #[test]
    fn integers_beyond_i64_become_floats() {
        let meta = meta_from_json(&json!({"big": u64::MAX, "just_over": i64::MAX as u64 + 1})).unwrap();
        assert_eq!(meta["big"], MetaValue::Float(u64::MAX as f64));
        assert_eq!(meta["just_over"], MetaValue::Float(9_223_372_036_854_775_808.0));
        assert_eq!(meta_to_json(&meta)["big"], json!(18_446_744_073_709_551_615.0_f64));
    }

    #[test]
    fn non_object_meta_is_refused() {
        for (value, found) in [
            (json!(null), "null"),
            (json!(true), "a boolean"),
            (json!(3), "a number"),
            (json!("Ada"), "a string"),
            (json!([{"name": "Ada"}]), "an array"),
        ] {
            assert_eq!(meta_from_json(&value), Err(MetaError::NotAnObject { found }), "{value}");
        }
        assert_eq!(
            MetaError::NotAnObject { found: "an array" }.to_string(),
            "a meta must be a JSON object, got an array"
        );
    }

    #[test]
    fn keys_come_back_sorted() {
        let meta = meta_from_json(&serde_json::from_str(r#"{"b":1,"a":{"d":1,"c":2}}"#).unwrap()).unwrap();
        assert_eq!(meta_to_json(&meta).to_string(), r#"{"a":{"c":2,"d":1},"b":1}"#);
    }

    #[test]
    fn non_finite_floats_encode_as_null() {
        let meta = Meta::from([("x".to_owned(), MetaValue::Float(f64::INFINITY))]);
        assert_eq!(meta_to_json(&meta), json!({"x": null}));
    }

    #[test]
    fn values_written_straight_to_json_read_as_the_built_ones() {
        let value = json!({"a": [1, 2.5, "x", null, true, {"b": {}}], "n": -3, "s": "é ✓ \"q\""});
        let meta = meta_value_from_json(&value);
        assert_eq!(serde_json::to_string(&MetaValueJson(&meta)).unwrap(), meta_value_to_json(&meta).to_string());
        let nan = MetaValue::List(vec![MetaValue::Float(f64::NAN)]);
        assert_eq!(serde_json::to_string(&MetaValueJson(&nan)).unwrap(), "[null]");
    }
}
