//! Moving JSON-shaped values in and out of Automerge maps.
//!
//! Mutable objects are stored one Automerge key per field, so that two replicas editing
//! different fields of the same agent both keep their edit, and the same field resolves by
//! Automerge's deterministic last-writer-wins. Nested values (a [`Measure`](crate::Measure),
//! a list of ids) become nested maps and lists.

use automerge::transaction::Transactable;
use automerge::{ObjId, ObjType, ReadDoc, ScalarValue, Value};
use serde_json::{Map, Number, Value as Json};

use crate::error::Result;

/// Write `value` under `key` of the map `obj`.
pub(crate) fn put_json<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    key: &str,
    value: &Json,
) -> Result<()> {
    match value {
        Json::Null => {
            if tx.get(obj, key)?.is_some() {
                tx.delete(obj, key)?;
            }
        }
        Json::Bool(b) => tx.put(obj, key, *b)?,
        Json::Number(n) => tx.put(obj, key, number(n))?,
        Json::String(s) => tx.put(obj, key, s.as_str())?,
        Json::Array(items) => {
            let list = tx.put_object(obj, key, ObjType::List)?;
            for (i, item) in items.iter().enumerate() {
                insert_json(tx, &list, i, item)?;
            }
        }
        Json::Object(fields) => {
            let map = tx.put_object(obj, key, ObjType::Map)?;
            for (k, v) in fields {
                put_json(tx, &map, k, v)?;
            }
        }
    }
    Ok(())
}

fn insert_json<T: Transactable>(
    tx: &mut T,
    list: &ObjId,
    index: usize,
    value: &Json,
) -> Result<()> {
    match value {
        Json::Null => tx.insert(list, index, ScalarValue::Null)?,
        Json::Bool(b) => tx.insert(list, index, *b)?,
        Json::Number(n) => tx.insert(list, index, number(n))?,
        Json::String(s) => tx.insert(list, index, s.as_str())?,
        Json::Array(items) => {
            let inner = tx.insert_object(list, index, ObjType::List)?;
            for (i, item) in items.iter().enumerate() {
                insert_json(tx, &inner, i, item)?;
            }
        }
        Json::Object(fields) => {
            let map = tx.insert_object(list, index, ObjType::Map)?;
            for (k, v) in fields {
                put_json(tx, &map, k, v)?;
            }
        }
    }
    Ok(())
}

fn number(n: &Number) -> ScalarValue {
    if let Some(i) = n.as_i64() {
        ScalarValue::Int(i)
    } else if let Some(u) = n.as_u64() {
        ScalarValue::Uint(u)
    } else {
        ScalarValue::F64(n.as_f64().unwrap_or(0.0))
    }
}

/// Read the object `obj` (a map or a list) back as JSON.
pub(crate) fn read_json<R: ReadDoc>(doc: &R, obj: &ObjId) -> Json {
    match doc.object_type(obj) {
        Ok(ObjType::List) | Ok(ObjType::Text) => {
            let mut items = Vec::new();
            for item in doc.list_range(obj, ..) {
                items.push(value_json(
                    doc,
                    &item.value.clone().into_value(),
                    &item.id(),
                ));
            }
            Json::Array(items)
        }
        _ => {
            let mut fields = Map::new();
            for item in doc.map_range(obj, ..) {
                fields.insert(
                    item.key.to_string(),
                    value_json(doc, &item.value.clone().into_value(), &item.id()),
                );
            }
            Json::Object(fields)
        }
    }
}

fn value_json<R: ReadDoc>(doc: &R, value: &Value<'_>, id: &ObjId) -> Json {
    match value {
        Value::Object(_) => read_json(doc, id),
        Value::Scalar(s) => match s.as_ref() {
            ScalarValue::Str(s) => Json::String(s.to_string()),
            ScalarValue::Int(i) => Json::from(*i),
            ScalarValue::Uint(u) => Json::from(*u),
            ScalarValue::F64(f) => Number::from_f64(*f).map_or(Json::Null, Json::Number),
            ScalarValue::Boolean(b) => Json::Bool(*b),
            ScalarValue::Counter(c) => Json::from(i64::from(c)),
            ScalarValue::Timestamp(t) => Json::from(*t),
            _ => Json::Null,
        },
    }
}
