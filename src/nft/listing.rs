//! The one parser of nft's JSON listings (`nft -j list table ...`).
//!
//! Listings are read as plain JSON: the `nftables` crate's deserializer
//! would link ~0.1 MB and cannot read every form nft prints (e.g. a map's
//! concatenated data type), and operators may put anything in the chains we
//! list. A listed key goes back into a command through `key_expr`.

use nftables::expr::{Expression, NamedExpression, Range};
use nftables::types::NfFamily;
use serde_json::Value;

use super::error::{Error, Result};
use super::schema::{family_of, prefix, Expr};

/// One element as nft lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedElement {
    /// The set or map holding it.
    pub set: String,
    pub key: Value,
    /// The mapped value, for maps.
    pub data: Option<Value>,
    pub comment: Option<String>,
}

impl ListedElement {
    /// The chain a verdict map element jumps to.
    pub fn jump_target(&self) -> Option<&str> {
        self.data.as_ref()?.pointer("/jump/target")?.as_str()
    }
}

/// One rule as nft lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedRule {
    pub chain: String,
    pub handle: u32,
    pub comment: Option<String>,
    pub expr: Value,
}

/// A table as nft lists it.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub objects: Vec<Value>,
}

impl Listing {
    /// Parses nft's output for `list table`.
    pub fn parse(json: &str) -> Result<Listing> {
        let doc: Value = serde_json::from_str(json).map_err(|e| Error::exec("parsing nft's listing", e))?;
        let objects = doc.get("nftables").and_then(Value::as_array).cloned().unwrap_or_default();
        Ok(Listing { objects })
    }

    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects.iter().filter_map(move |o| o.get(kind))
    }

    /// Every element of every set and map.
    pub fn elements(&self) -> Vec<ListedElement> {
        let mut out = Vec::new();
        for object in &self.objects {
            for (kind, set) in ["set", "map"].into_iter().filter_map(|k| Some((k, object.get(k)?))) {
                let name = set.get("name").and_then(Value::as_str).unwrap_or_default();
                let Some(elems) = set.get("elem").and_then(Value::as_array) else { continue };
                for e in elems {
                    let (key, data) = match (kind, e) {
                        ("map", Value::Array(pair)) if pair.len() == 2 => (&pair[0], Some(pair[1].clone())),
                        _ => (e, None),
                    };
                    let (key, comment) = match key.get("elem") {
                        Some(inner) => (
                            inner.get("val").cloned().unwrap_or(Value::Null),
                            inner.get("comment").and_then(Value::as_str).map(str::to_string),
                        ),
                        None => (key.clone(), None),
                    };
                    out.push(ListedElement { set: name.to_string(), key, data, comment });
                }
            }
        }
        out
    }

    /// Every rule, with its handle and comment.
    pub fn rules(&self) -> Vec<ListedRule> {
        self.of_kind("rule")
            .filter_map(|r| {
                Some(ListedRule {
                    chain: r.get("chain")?.as_str()?.to_string(),
                    handle: r.get("handle")?.as_u64()? as u32,
                    comment: r.get("comment").and_then(Value::as_str).map(str::to_string),
                    expr: r.get("expr").cloned().unwrap_or(Value::Null),
                })
            })
            .collect()
    }

    /// Names of the chains in the table.
    pub fn chains(&self) -> Vec<String> {
        self.of_kind("chain").filter_map(|c| c.get("name")?.as_str().map(str::to_string)).collect()
    }

    /// The tables of a `list tables` listing: (family, name).
    pub fn tables(&self) -> Vec<(NfFamily, String)> {
        self.of_kind("table")
            .filter_map(|t| Some((family_of(t.get("family")?.as_str()?)?, t.get("name")?.as_str()?.to_string())))
            .collect()
    }

    /// The comments of every element and rule.
    pub fn comments(&self) -> Vec<String> {
        let elements = self.elements().into_iter().filter_map(|e| e.comment);
        elements.chain(self.rules().into_iter().filter_map(|r| r.comment)).collect()
    }

    /// Names of the sets and maps in the table.
    pub fn sets(&self) -> Vec<String> {
        self.of_kind("set")
            .chain(self.of_kind("map"))
            .filter_map(|c| c.get("name")?.as_str().map(str::to_string))
            .collect()
    }
}

/// A listed key (or a part of one) as a schema expression, for the command
/// that deletes it; None for a form our tables never hold.
pub fn key_expr(v: &Value) -> Option<Expr> {
    Some(match v {
        Value::String(s) => Expression::String(s.clone().into()),
        Value::Number(n) => Expression::Number(u32::try_from(n.as_u64()?).ok()?),
        Value::Bool(b) => Expression::Boolean(*b),
        Value::Object(o) if o.contains_key("concat") => Expression::Named(NamedExpression::Concat(
            o["concat"].as_array()?.iter().map(key_expr).collect::<Option<_>>()?,
        )),
        Value::Object(o) if o.contains_key("prefix") => {
            let p = &o["prefix"];
            let net = format!("{}/{}", p.get("addr")?.as_str()?, p.get("len")?.as_u64()?);
            prefix(net.parse().ok()?)
        }
        Value::Object(o) if o.contains_key("range") => {
            let r = o["range"].as_array()?;
            Expression::Range(Box::new(Range { range: [key_expr(r.first()?)?, key_expr(r.get(1)?)?] }))
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_elements_of_sets_and_maps() {
        let listing = Listing::parse(
            r#"{"nftables":[{"metainfo":{}},
            {"map":{"name":"m","elem":[[{"elem":{"val":{"concat":["tcp",80]},"comment":"n c e"}},"10.0.0.1"],
                                       [{"concat":["udp",53]},"10.0.0.2"]]}},
            {"set":{"name":"s","elem":["10.0.0.1",{"elem":{"val":"10.0.0.3","comment":"x"}}]}},
            {"rule":{"chain":"c","handle":7,"comment":"n c e","expr":[]}}]}"#,
        )
        .unwrap();
        let e = listing.elements();
        assert_eq!(e.len(), 4);
        assert_eq!(e[0].comment.as_deref(), Some("n c e"));
        assert_eq!(e[0].data, Some(Value::from("10.0.0.1")));
        assert_eq!(e[1].comment, None);
        assert_eq!(e[3].key, Value::from("10.0.0.3"));
        assert_eq!(listing.rules()[0].handle, 7);
        assert_eq!(listing.sets(), ["s", "m"]);
    }

    #[test]
    fn listed_keys_become_expressions_again() {
        for listed in [
            serde_json::json!({"concat": ["tcp", 80]}),
            serde_json::json!("10.0.0.1"),
            serde_json::json!({"concat": [{"prefix": {"addr": "10.1.0.0", "len": 24}}, "10.1.0.5"]}),
            serde_json::json!({"range": ["10.0.0.1", "10.0.0.9"]}),
        ] {
            let expr = key_expr(&listed).unwrap();
            assert_eq!(serde_json::to_value(&expr).unwrap(), listed);
        }
        assert!(key_expr(&serde_json::json!({"elem": {}})).is_none());
    }
}
