//! Reading the version-1 object maps (one Automerge key per field, nested values as nested
//! maps and lists) back as JSON. Version 2 stores each field as JSON text (see `schema`).

use automerge::{ObjId, ObjType, ReadDoc, ScalarValue, Value};
use serde_json::{Map, Number, Value as Json};

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
