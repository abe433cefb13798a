//! `type = "cors"`: answers preflights at the gateway and adds the CORS headers to answers for allowed origins.

use super::RequestState;
use crate::body::ResponseBody;
use crate::rescue::ProxyError;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use sluice_config::{Cors, OriginPattern};

/// Whether the request is a CORS preflight: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`.
pub fn is_preflight(parts: &Parts) -> bool {
    parts.method == Method::OPTIONS
        && parts.headers.contains_key(header::ORIGIN)
        && parts
            .headers
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The method a preflight asks about.
pub fn requested_method(parts: &Parts) -> Option<Method> {
    let value = parts.headers.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
    Method::from_bytes(value.as_bytes()).ok()
}

fn allowed_origin(cors: &Cors, origin: &HeaderValue) -> bool {
    origin
        .to_str()
        .is_ok_and(|o| cors.origins.iter().any(|p| p.matches(o)))
}

/// The `Access-Control-Allow-Origin` value: `*` for any origin without credentials,
/// otherwise the origin itself.
fn allow_origin_value(cors: &Cors, origin: &HeaderValue) -> HeaderValue {
    if !cors.credentials && cors.origins.contains(&OriginPattern::Any) {
        HeaderValue::from_static("*")
    } else {
        origin.clone()
    }
}

pub fn request(
    cors: &Cors,
    parts: &Parts,
    state: &mut RequestState,
) -> Result<Option<Response<ResponseBody>>, ProxyError> {
    let Some(origin) = parts.headers.get(header::ORIGIN) else {
        return Ok(None);
    };
    let allowed = allowed_origin(cors, origin);
    if !is_preflight(parts) {
        // A page on another origin may still send the request; without the headers its
        // script cannot read the answer.
        if allowed {
            state.cors_origin = Some(allow_origin_value(cors, origin));
        }
        return Ok(None);
    }
    if !allowed {
        return Err(ProxyError::CorsRejected(format!(
            "origin {} is not allowed",
            origin.to_str().unwrap_or("(not text)")
        )));
    }
    let method = requested_method(parts);
    if !method.as_ref().is_some_and(|m| cors.methods.contains(m)) {
        return Err(ProxyError::CorsRejected(format!(
            "method {} is not allowed",
            method.as_ref().map_or("(invalid)", Method::as_str)
        )));
    }
    let requested = parts.headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS);
    if let (Some(allowed), Some(requested)) = (&cors.allow_headers, requested) {
        let names = requested.to_str().unwrap_or("").split(',').map(str::trim);
        if let Some(refused) = names
            .filter(|n| !n.is_empty())
            .find(|n| !allowed.iter().any(|a| a.as_str().eq_ignore_ascii_case(n)))
        {
            return Err(ProxyError::CorsRejected(format!(
                "header {refused} is not allowed"
            )));
        }
    }

    let mut response = Response::new(ResponseBody::full(""));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let h = response.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        allow_origin_value(cors, origin),
    );
    let methods: Vec<&str> = cors.methods.iter().map(Method::as_str).collect();
    if let Ok(v) = HeaderValue::from_str(&methods.join(", ")) {
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
    }
    let allow_headers = match &cors.allow_headers {
        Some(list) => {
            let names: Vec<&str> = list.iter().map(|n| n.as_str()).collect();
            HeaderValue::from_str(&names.join(", ")).ok()
        }
        None => requested.cloned(),
    };
    if let Some(v) = allow_headers.filter(|v| !v.is_empty()) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    if cors.credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if let Some(age) = cors.max_age {
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(age.as_secs()),
        );
    }
    h.insert(
        header::VARY,
        HeaderValue::from_static(
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        ),
    );
    Ok(Some(response))
}

/// Adds the CORS headers to an answer for an allowed origin.
pub fn respond(cors: &Cors, headers: &mut HeaderMap, state: &RequestState) {
    // A preflight answered here has its headers already.
    if headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        return;
    }
    let Some(origin) = &state.cors_origin else {
        if !cors.origins.contains(&OriginPattern::Any) || cors.credentials {
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        return;
    };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    if origin != "*" {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    if cors.credentials {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if !cors.expose_headers.is_empty() {
        let names: Vec<&str> = cors.expose_headers.iter().map(|n| n.as_str()).collect();
        if let Ok(v) = HeaderValue::from_str(&names.join(", ")) {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
        }
    }
}
