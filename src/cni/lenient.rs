//! Deserializing configs as leniently as Go's encoding/json does: keys of a
//! struct match its field names without regard to case, and `null` leaves a
//! field at its default. Unknown keys are ignored (serde's default).
//!
//! `from_value` wraps a `serde_json::Value` in a deserializer that renames
//! object keys to the field names serde asks for in `deserialize_struct`.

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::error::{CniError, DECODE_FAILURE};

pub type Error = de::value::Error;

/// Parses `value` into `T`, matching keys case-insensitively.
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, Error> {
    T::deserialize(Lenient(value))
}

/// `from_value` for a config: errors become CNI code 6 naming `what`.
pub fn parse_config<T: DeserializeOwned>(value: &Value, what: &str) -> Result<T, CniError> {
    from_value(value)
        .map_err(|e| CniError::new(DECODE_FAILURE, format!("failed to parse {what}")).with_details(e.to_string()))
}

struct Lenient<'a>(&'a Value);

/// Object entries renamed to the struct's field names, nulls dropped.
fn canonical_entries<'a>(map: &'a Map<String, Value>, fields: &'static [&'static str]) -> Vec<(String, &'a Value)> {
    let mut out = Vec::with_capacity(map.len());
    for (key, value) in map {
        if value.is_null() {
            continue;
        }
        let name = if fields.contains(&key.as_str()) {
            key.clone()
        } else if let Some(field) = fields.iter().find(|f| f.eq_ignore_ascii_case(key)) {
            // An exact match elsewhere in the object wins, as in Go.
            if map.contains_key(*field) {
                continue;
            }
            field.to_string()
        } else {
            key.clone()
        };
        out.push((name, value));
    }
    out
}

struct Entries<'a> {
    iter: std::vec::IntoIter<(String, &'a Value)>,
    next_value: Option<&'a Value>,
}

impl<'de, 'a> MapAccess<'de> for Entries<'a> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        match self.iter.next() {
            Some((k, v)) => {
                self.next_value = Some(v);
                seed.deserialize(k.into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let v = self.next_value.take().ok_or_else(|| de::Error::custom("value without key"))?;
        seed.deserialize(Lenient(v))
    }
}

struct Items<'a>(std::slice::Iter<'a, Value>);

impl<'de, 'a> SeqAccess<'de> for Items<'a> {
    type Error = Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        match self.0.next() {
            Some(v) => seed.deserialize(Lenient(v)).map(Some),
            None => Ok(None),
        }
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

fn visit_map<'de, V: Visitor<'de>>(entries: Vec<(String, &Value)>, visitor: V) -> Result<V::Value, Error> {
    visitor.visit_map(Entries { iter: entries.into_iter(), next_value: None })
}

impl<'de, 'a> de::Deserializer<'de> for Lenient<'a> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => visitor.visit_str(s),
            Value::Array(a) => visitor.visit_seq(Items(a.iter())),
            Value::Object(m) => visit_map(m.iter().map(|(k, v)| (k.clone(), v)).collect(), visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Value::Object(m) => visit_map(canonical_entries(m, fields), visitor),
            other => Err(de::Error::invalid_type(unexpected(other), &visitor)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            other => {
                de::Deserializer::deserialize_enum(other.clone(), name, variants, visitor).map_err(de::Error::custom)
            }
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

fn unexpected(v: &Value) -> de::Unexpected<'_> {
    match v {
        Value::Null => de::Unexpected::Unit,
        Value::Bool(b) => de::Unexpected::Bool(*b),
        Value::Number(_) => de::Unexpected::Other("number"),
        Value::String(s) => de::Unexpected::Str(s),
        Value::Array(_) => de::Unexpected::Seq,
        Value::Object(_) => de::Unexpected::Map,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Deserialize, Debug, Default, PartialEq)]
    #[serde(rename_all = "camelCase", default)]
    struct Inner {
        is_gateway: bool,
        mtu: Option<u32>,
    }

    #[derive(Deserialize, Debug, Default, PartialEq)]
    #[serde(rename_all = "camelCase", default)]
    struct Outer {
        name: String,
        inner: Inner,
        list: Vec<Inner>,
    }

    #[test]
    fn keys_match_without_case() {
        let v = json!({"NAME": "n", "Inner": {"isgateway": true, "MTU": 1400}, "list": [{"ISGATEWAY": true}]});
        let o: Outer = from_value(&v).unwrap();
        assert_eq!(o.name, "n");
        assert!(o.inner.is_gateway);
        assert_eq!(o.inner.mtu, Some(1400));
        assert!(o.list[0].is_gateway);
    }

    #[test]
    fn exact_key_wins_over_a_case_variant() {
        let v = json!({"isGateway": true, "isgateway": false});
        let i: Inner = from_value(&v).unwrap();
        assert!(i.is_gateway);
    }

    #[test]
    fn null_and_unknown_keys_are_ignored() {
        let v = json!({"name": null, "bogus": 3, "inner": null});
        let o: Outer = from_value(&v).unwrap();
        assert_eq!(o, Outer::default());
    }

    #[test]
    fn wrong_types_are_errors() {
        assert!(from_value::<Inner>(&json!({"mtu": "big"})).is_err());
        assert!(from_value::<Inner>(&json!([1])).is_err());
        assert!(from_value::<Inner>(&json!({"mtu": -1})).is_err());
    }
}
