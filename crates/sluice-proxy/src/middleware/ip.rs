//! `type = "ip"`: allow and deny lists of address blocks, checked against the client's address.

use crate::rescue::ProxyError;
use sluice_config::IpRules;
use std::net::IpAddr;

/// Deny wins; with an allow list, only addresses on it pass. A request with no client
/// address (a Unix-socket listener) passes only when there is no allow list.
pub fn check(rules: &IpRules, client: Option<IpAddr>) -> Result<(), ProxyError> {
    let listed =
        |list: &[sluice_config::Cidr]| client.is_some_and(|ip| list.iter().any(|c| c.contains(ip)));
    if listed(&rules.deny) {
        return Err(ProxyError::Forbidden(format!(
            "client address {} is denied",
            shown(client)
        )));
    }
    if !rules.allow.is_empty() && !listed(&rules.allow) {
        return Err(ProxyError::Forbidden(format!(
            "client address {} is not allowed",
            shown(client)
        )));
    }
    Ok(())
}

fn shown(ip: Option<IpAddr>) -> String {
    ip.map_or_else(|| "(none: unix socket)".to_string(), |ip| ip.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_config::Cidr;

    #[test]
    fn deny_wins_and_allow_lists_are_exclusive() {
        let rules = IpRules {
            allow: vec![Cidr::parse("10.0.0.0/8").expect("cidr")],
            deny: vec![Cidr::parse("10.0.0.13").expect("cidr")],
        };
        let ip = |s: &str| Some(s.parse().expect("ip"));
        assert!(check(&rules, ip("10.1.2.3")).is_ok());
        assert!(check(&rules, ip("10.0.0.13")).is_err());
        assert!(check(&rules, ip("192.0.2.1")).is_err());
        assert!(check(&rules, None).is_err());
        let deny_only = IpRules {
            allow: vec![],
            deny: rules.deny.clone(),
        };
        assert!(check(&deny_only, ip("192.0.2.1")).is_ok());
        assert!(check(&deny_only, None).is_ok());
    }
}
