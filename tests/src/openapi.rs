//! `api/openapi.yaml` for tests: loading it, resolving `$ref`s, checking a
//! value against a schema, and the statuses documented for a request.

use serde_json::Value;

pub fn load_spec() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../api/openapi.yaml"))
        .unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

pub fn resolve<'a>(spec: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.strip_prefix('#').expect("local $ref");
            resolve(
                spec,
                spec.pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling {r}")),
            )
        }
        None => node,
    }
}

/// Checks `value` against the subset of OpenAPI 3.0 schema used by the spec;
/// returns the first mismatch.
pub fn validate(spec: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(spec, schema);
    if value.is_null() {
        return if schema["nullable"] == true {
            Ok(())
        } else {
            Err(format!("{at}: null"))
        };
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
        // Each alternative narrows the schema it sits in (the spec writes
        // `type` once, outside): the value must pass the rest of the schema
        // and at least one alternative merged into it.
        let mut rest = schema.clone();
        rest.as_object_mut().unwrap().remove("anyOf");
        let fits = |alt: &Value| {
            let mut merged = rest.clone();
            let alt = resolve(spec, alt);
            for (k, v) in alt.as_object().into_iter().flatten() {
                merged[k] = v.clone();
            }
            validate(spec, &merged, value, at).is_ok()
        };
        if !any.iter().any(fits) {
            return Err(format!("{at}: {value} matches no alternative of anyOf"));
        }
        return validate(spec, &rest, value, at);
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            return Err(format!("{at}: {value} not in {allowed:?}"));
        }
    }
    let in_range = |n: f64| {
        schema["minimum"].as_f64().is_none_or(|m| n >= m)
            && schema["maximum"].as_f64().is_none_or(|m| n <= m)
    };
    match schema["type"].as_str() {
        Some("string") if value.is_string() => Ok(()),
        Some("boolean") if value.is_boolean() => Ok(()),
        Some("integer") if value.is_i64() || value.is_u64() => {
            if in_range(value.as_f64().unwrap()) {
                Ok(())
            } else {
                Err(format!("{at}: {value} out of range"))
            }
        }
        Some("array") => {
            let items = value.as_array().ok_or(format!("{at}: not an array"))?;
            if items.len() < schema["minItems"].as_u64().unwrap_or(0) as usize {
                return Err(format!("{at}: too few items"));
            }
            for (i, item) in items.iter().enumerate() {
                validate(spec, &schema["items"], item, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        Some("object") => {
            let obj = value.as_object().ok_or(format!("{at}: not an object"))?;
            let props = schema.get("properties").and_then(Value::as_object);
            for required in schema["required"].as_array().into_iter().flatten() {
                let key = required.as_str().unwrap();
                if !obj.contains_key(key) {
                    return Err(format!("{at}: `{key}` missing"));
                }
            }
            for (key, v) in obj {
                let path = format!("{at}.{key}");
                match props.and_then(|p| p.get(key)) {
                    Some(s) => validate(spec, s, v, &path)?,
                    None => match schema.get("additionalProperties") {
                        Some(Value::Bool(false)) => return Err(format!("{path}: undocumented")),
                        Some(s) if s.is_object() => validate(spec, s, v, &path)?,
                        _ => {}
                    },
                }
            }
            Ok(())
        }
        other => Err(format!("{at}: {value} is not of type {other:?}")),
    }
}

/// The documented responses of one path and method (`x-other-methods` for
/// a method the path does not list, `x-unknown-paths` for an unknown path).
pub fn documented<'a>(
    spec: &'a Value,
    path: &str,
    method: &str,
) -> &'a serde_json::Map<String, Value> {
    let Some(item) = spec["paths"].get(path) else {
        return spec["x-unknown-paths"]["responses"].as_object().unwrap();
    };
    match item.get(method) {
        Some(op) => op["responses"].as_object().unwrap(),
        None => item["x-other-methods"]["responses"].as_object().unwrap(),
    }
}
