//! A verified token's claims: their text for headers, placeholders and rate-limit keys, and the checks a route asks of them (exact values, scopes, roles).

use serde_json::{Map, Value};
use sluice_config::{ClaimValue, Jwt};
use std::borrow::Cow;
use std::sync::Arc;

/// The claims of a token whose signature, times, issuer and audience checked out; shared,
/// so a token verified once serves later requests without copying them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claims(Arc<Map<String, Value>>);

impl Claims {
    pub fn new(claims: Map<String, Value>) -> Claims {
        Claims(Arc::new(claims))
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// A claim as text: a string as it is, a number or a boolean written out. Arrays,
    /// objects, `null` and missing claims have none.
    pub fn text(&self, name: &str) -> Option<Cow<'_, str>> {
        match self.0.get(name)? {
            Value::String(s) => Some(Cow::Borrowed(s)),
            Value::Number(n) => Some(Cow::Owned(n.to_string())),
            Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
            _ => None,
        }
    }
}

/// Why a request with valid `claims` is still not allowed (403), or `None` when it is:
/// every `require_claims` value, every `require_scopes` scope, and one of `require_roles`.
pub fn refusal(config: &Jwt, claims: &Claims) -> Option<String> {
    for (name, want) in &config.require_claims {
        if !equals(claims.get(name), want) {
            return Some(format!("the token's claim `{name}` is not {want}"));
        }
    }
    if !config.require_scopes.is_empty() {
        let mut granted = words(claims.get("scope"));
        granted.extend(words(claims.get("scp")));
        if let Some(missing) = config
            .require_scopes
            .iter()
            .find(|s| !granted.contains(&s.as_str()))
        {
            return Some(format!("the token lacks scope `{missing}`"));
        }
    }
    if !config.require_roles.is_empty() {
        let roles = words(claims.get("roles"));
        if !config
            .require_roles
            .iter()
            .any(|r| roles.contains(&r.as_str()))
        {
            return Some(format!(
                "the token has none of the roles {}",
                config.require_roles.join(", ")
            ));
        }
    }
    None
}

fn equals(value: Option<&Value>, want: &ClaimValue) -> bool {
    match (value, want) {
        (Some(Value::String(s)), ClaimValue::Text(t)) => s == t,
        (Some(Value::Bool(b)), ClaimValue::Bool(w)) => b == w,
        (Some(Value::Number(n)), ClaimValue::Integer(w)) => {
            n.as_i64() == Some(*w) || (n.is_f64() && n.as_f64() == Some(*w as f64))
        }
        _ => false,
    }
}

/// The words of a space-separated string, or the strings of an array.
fn words(value: Option<&Value>) -> Vec<&str> {
    match value {
        Some(Value::String(s)) => s.split_whitespace().collect(),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sluice_config::{JwtKeys, Location, Secret};
    use std::time::Duration;

    fn claims(v: Value) -> Claims {
        match v {
            Value::Object(map) => Claims::new(map),
            other => panic!("{other}"),
        }
    }

    fn rules(
        require_claims: Vec<(&str, ClaimValue)>,
        require_scopes: &[&str],
        require_roles: &[&str],
    ) -> Jwt {
        Jwt {
            algorithms: vec![sluice_config::JwtAlgorithm::HS256],
            keys: JwtKeys::Secret(Secret::new(vec![0; 32])),
            issuer: None,
            audience: Vec::new(),
            leeway: Duration::ZERO,
            token_from: Vec::new(),
            require_claims: require_claims
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            require_scopes: require_scopes.iter().map(|s| s.to_string()).collect(),
            require_roles: require_roles.iter().map(|s| s.to_string()).collect(),
            forward_claims: Vec::new(),
            hide_credentials: false,
            location: Location::START,
        }
    }

    #[test]
    fn scalar_claims_are_text_and_the_rest_is_not() {
        let c = claims(
            json!({"sub": "alice", "uid": 42, "ratio": 1.5, "admin": true,
            "roles": ["a"], "org": {"id": 1}, "none": null}),
        );
        assert_eq!(c.text("sub").as_deref(), Some("alice"));
        assert_eq!(c.text("uid").as_deref(), Some("42"));
        assert_eq!(c.text("ratio").as_deref(), Some("1.5"));
        assert_eq!(c.text("admin").as_deref(), Some("true"));
        for absent in ["roles", "org", "none", "missing"] {
            assert_eq!(c.text(absent), None, "{absent}");
        }
    }

    #[test]
    fn required_claims_must_equal_with_their_type() {
        let rule = rules(
            vec![
                ("tenant", ClaimValue::Text("acme".into())),
                ("level", ClaimValue::Integer(3)),
                ("staff", ClaimValue::Bool(true)),
            ],
            &[],
            &[],
        );
        let ok = claims(json!({"tenant": "acme", "level": 3, "staff": true}));
        assert_eq!(refusal(&rule, &ok), None);
        let float = claims(json!({"tenant": "acme", "level": 3.0, "staff": true}));
        assert_eq!(refusal(&rule, &float), None);
        for (bad, why) in [
            (
                json!({"tenant": "acme2", "level": 3, "staff": true}),
                "the token's claim `tenant` is not \"acme\"",
            ),
            (
                json!({"tenant": "acme", "level": "3", "staff": true}),
                "the token's claim `level` is not 3",
            ),
            (
                json!({"tenant": "acme", "level": 3, "staff": "true"}),
                "the token's claim `staff` is not true",
            ),
            (
                json!({"tenant": ["acme"], "level": 3, "staff": true}),
                "the token's claim `tenant` is not \"acme\"",
            ),
            (
                json!({"level": 3, "staff": true}),
                "the token's claim `tenant` is not \"acme\"",
            ),
        ] {
            assert_eq!(refusal(&rule, &claims(bad)).as_deref(), Some(why));
        }
    }

    #[test]
    fn every_scope_is_needed_from_scope_or_scp() {
        let rule = rules(vec![], &["orders:read", "orders:write"], &[]);
        let both = claims(json!({"scope": "profile orders:read  orders:write"}));
        assert_eq!(refusal(&rule, &both), None);
        let split = claims(json!({"scope": "orders:read", "scp": ["orders:write"]}));
        assert_eq!(refusal(&rule, &split), None);
        let one = claims(json!({"scope": "orders:read orders:writer"}));
        assert_eq!(
            refusal(&rule, &one).as_deref(),
            Some("the token lacks scope `orders:write`")
        );
        assert!(refusal(&rule, &claims(json!({}))).is_some());
    }

    #[test]
    fn one_of_the_roles_is_enough() {
        let rule = rules(vec![], &[], &["admin", "support"]);
        assert_eq!(
            refusal(&rule, &claims(json!({"roles": ["user", "support"]}))),
            None
        );
        assert_eq!(refusal(&rule, &claims(json!({"roles": "admin"}))), None);
        assert_eq!(
            refusal(&rule, &claims(json!({"roles": ["user"]}))).as_deref(),
            Some("the token has none of the roles admin, support")
        );
        assert!(refusal(&rule, &claims(json!({"role": "admin"}))).is_some());
    }
}
