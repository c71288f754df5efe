//! JSON without ambiguity: an object that names a key twice is refused, at any depth.
//!
//! `serde_json` keeps the last of two equal keys (`{"amount":1,"amount":700}` reads 700), while
//! another reader (a proxy, a log, an auditor's script) may keep the first: the same bytes would
//! then mean two different payments. [`UniqueValue`] and [`UniqueMap`] read what
//! `serde_json::Value` and `BTreeMap<String, V>` read, in the same single pass, and fail on the
//! first repeated key with the error [`duplicate_key`] recognises. The check is the map
//! insertion's own answer, so it costs nothing that reading the value did not already cost.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::fmt;

/// How the error message of a repeated key starts; the key follows, between backquotes.
/// serde's derived structs name a repeated field the same way (`duplicate field `amount``).
const DUPLICATE_PREFIX: &str = "duplicate field `";

/// The error for a key that appears twice in one object.
fn duplicate<E: de::Error>(key: &str) -> E {
    E::custom(format_args!("{DUPLICATE_PREFIX}{key}`"))
}

/// The repeated key named by an error message of this module (or of a serde-derived struct),
/// if the message is one.
pub fn duplicate_key(message: &str) -> Option<&str> {
    let rest = message.strip_prefix(DUPLICATE_PREFIX)?;
    Some(&rest[..rest.find('`')?])
}

/// Parses one JSON text into a [`Value`], refusing a repeated key in any object.
pub fn from_slice(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    serde_json::from_slice::<UniqueValue>(bytes).map(|unique| unique.0)
}

/// A JSON value in which no object repeats a key.
#[derive(Clone, Debug, PartialEq)]
pub struct UniqueValue(pub Value);

impl<'de> Deserialize<'de> for UniqueValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueValueVisitor).map(UniqueValue)
    }
}

/// `serde_json`'s own value visitor, with the check on object keys.
struct UniqueValueVisitor;

impl<'de> Visitor<'de> for UniqueValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(Number::from_f64(value).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        UniqueValue::deserialize(deserializer).map(|unique| unique.0)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(UniqueValue(value)) = seq.next_element()? {
            values.push(value);
        }
        Ok(Value::Array(values))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match object.entry(key) {
                serde_json::map::Entry::Occupied(taken) => return Err(duplicate(taken.key())),
                serde_json::map::Entry::Vacant(free) => {
                    free.insert(map.next_value::<UniqueValue>()?.0);
                }
            }
        }
        Ok(Value::Object(object))
    }
}

/// A JSON object read into a map, refusing a repeated key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UniqueMap<V>(pub BTreeMap<String, V>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for UniqueMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = UniqueMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueMap<V>, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    match out.entry(key) {
                        Entry::Occupied(taken) => return Err(duplicate(taken.key())),
                        Entry::Vacant(free) => {
                            free.insert(map.next_value()?);
                        }
                    }
                }
                Ok(UniqueMap(out))
            }
        }
        deserializer.deserialize_map(MapVisitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_serde_json_reads() {
        for text in [
            r#"{"a":1,"b":[true,null,-2,3.5,"x",{"c":{}}],"d":18446744073709551615,"e":-9223372036854775808}"#,
            r#"[]"#,
            r#""text""#,
            r#"{"a":{"a":{"a":1}},"b":{"a":2}}"#,
        ] {
            let plain: Value = serde_json::from_str(text).unwrap();
            assert_eq!(from_slice(text.as_bytes()).unwrap(), plain, "{text}");
        }
    }

    #[test]
    fn a_repeated_key_is_refused_at_any_depth() {
        for (text, key) in [
            (r#"{"amount":1,"amount":700}"#, "amount"),
            (r#"{"a":{"b":1,"c":2,"b":3}}"#, "b"),
            (r#"[{"x":1},{"y":[{"z":1,"z":1}]}]"#, "z"),
            (r#"{"k":1,"K":2,"k":3}"#, "k"),
        ] {
            let error = from_slice(text.as_bytes()).unwrap_err();
            assert!(error.is_data(), "{text}: {error}");
            assert_eq!(duplicate_key(&error.to_string()), Some(key), "{text}: {error}");
        }
        // Keys that only look alike are different keys.
        assert!(from_slice(br#"{"k":1,"K":2,"k ":3}"#).is_ok());
        // An escaped key is the same key once unescaped.
        assert!(from_slice(br#"{"amount":1,"\u0061mount":2}"#).is_err());
    }

    #[test]
    fn maps_refuse_a_repeated_key() {
        let map: UniqueMap<String> = serde_json::from_str(r#"{"b":"2","a":"1"}"#).unwrap();
        assert_eq!(map.0.keys().collect::<Vec<_>>(), ["a", "b"]);
        let error = serde_json::from_str::<UniqueMap<String>>(r#"{"a":"1","a":"2"}"#).unwrap_err();
        assert_eq!(duplicate_key(&error.to_string()), Some("a"));
    }
}
