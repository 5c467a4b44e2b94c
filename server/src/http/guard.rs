//! What keeps a web page from using a Brook on localhost: every request
//! passes [`guard`] before it reaches a route.
//!
//! - **Host** (DNS rebinding): on a loopback listener, the `Host` must name
//!   the loopback (`localhost`, `127.x.x.x`, `[::1]`). A page whose name was
//!   rebound to 127.0.0.1 sends its own name and is refused.
//! - **Origin** (cross-site requests): a request from a browser page of
//!   another origin is refused unless that origin is in
//!   `--http-allowed-origins` (`*` allows every one); allowed origins get
//!   CORS headers and preflight answers. Same-origin requests pass.
//! - **Content type**: a POST must say its body is JSON (`application/json`,
//!   `application/…+json`) or ksqlDB's delimited format. The types a page
//!   may send cross-site without a preflight (`text/plain`, forms) are
//!   refused, so the Origin check cannot be sidestepped.

use std::net::IpAddr;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ServerError;

/// The HTTP front end's protections.
#[derive(Debug, Clone, Default)]
pub struct HttpPolicy {
    /// Origins (`scheme://host[:port]`) whose pages may call the API; `*`
    /// allows any. Empty: same-origin requests and non-browser clients only.
    pub allowed_origins: Vec<String>,
    /// Accept any `Host` (a listener on a non-loopback address, reached by
    /// names Brook cannot know). Off for loopback listeners.
    pub any_host: bool,
}

impl HttpPolicy {
    /// The policy for a listener on `addr`: `Host` is checked only when it
    /// is a loopback address.
    pub fn for_listener(addr: std::net::SocketAddr, allowed_origins: Vec<String>) -> HttpPolicy {
        HttpPolicy {
            allowed_origins,
            any_host: !addr.ip().is_loopback(),
        }
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        self.allowed_origins
            .iter()
            .any(|o| o == "*" || o.trim_end_matches('/').eq_ignore_ascii_case(origin))
    }
}

/// The host part of a `Host` value or authority (`name`, `name:port`,
/// `[v6]:port`), lowercased.
fn host_name(authority: &str) -> String {
    let a = authority.trim();
    let host = if let Some(rest) = a.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        a.rsplit_once(':').map_or(a, |(h, _)| h)
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn is_loopback_name(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

/// The authority a request was sent to: its `Host` header, or the URI's
/// (HTTP/2's `:authority`).
fn authority(req: &Request) -> Option<String> {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
}

/// `authority` lowercased, with `port` added when it names none.
fn with_port(authority: &str, port: &str) -> String {
    let a = authority.to_ascii_lowercase();
    // After an IPv6 literal's `]`, or anywhere in a name, `:` starts a port.
    let has_port = a
        .rsplit_once(']')
        .map_or(a.as_str(), |(_, rest)| rest)
        .contains(':');
    if has_port {
        a
    } else {
        format!("{a}:{port}")
    }
}

/// Whether `origin` (`scheme://host[:port]`) is the origin the request was
/// sent to.
fn same_origin(origin: &str, authority: Option<&str>) -> bool {
    let (Some(authority), Some((scheme, rest))) = (authority, origin.split_once("://")) else {
        return false;
    };
    let port = if scheme.eq_ignore_ascii_case("https") {
        "443"
    } else {
        "80"
    };
    with_port(rest.trim_end_matches('/'), port) == with_port(authority, port)
}

fn json_like(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
        || essence == "application/vnd.ksqlapi.delimited.v1"
}

fn cors_headers(headers: &mut HeaderMap, origin: &str) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// The middleware: refuses what the policy does not allow, answers CORS
/// preflights, and adds CORS headers for allowed origins.
pub async fn guard(
    State(policy): State<std::sync::Arc<HttpPolicy>>,
    req: Request,
    next: Next,
) -> Response {
    let authority = authority(&req);
    if !policy.any_host {
        if let Some(a) = &authority {
            let host = host_name(a);
            if !is_loopback_name(&host) {
                return ServerError::Forbidden(format!(
                    "host \"{host}\" is not this server's: a server listening on the loopback answers only requests to localhost (a page may be trying DNS rebinding)"
                )).into_response();
            }
        }
    }
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or("null").to_string());
    let cross_origin = origin
        .as_deref()
        .filter(|o| !same_origin(o, authority.as_deref()));
    if let Some(o) = cross_origin {
        if !policy.origin_allowed(o) {
            return ServerError::Forbidden(format!(
                "cross-origin request from \"{o}\" refused: allow it with --http-allowed-origins"
            ))
            .into_response();
        }
    }
    if req.method() == Method::OPTIONS {
        let mut response = StatusCode::NO_CONTENT.into_response();
        if let Some(o) = cross_origin {
            let h = response.headers_mut();
            cors_headers(h, o);
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, OPTIONS"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("content-type, accept, authorization"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
        }
        return response;
    }
    if req.method() == Method::POST {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|c| c.to_str().ok())
            .unwrap_or_default();
        if !json_like(content_type) {
            let shown = if content_type.is_empty() {
                "none".to_string()
            } else {
                format!("\"{content_type}\"")
            };
            return ServerError::UnsupportedMediaType(format!(
                "content type {shown} is not accepted: send the body as application/json (or application/vnd.ksql.v1+json)"
            )).into_response();
        }
    }
    let cross = cross_origin.map(str::to_string);
    let mut response: Response<Body> = next.run(req).await;
    if let Some(o) = cross {
        cors_headers(response.headers_mut(), &o);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_and_origins() {
        assert_eq!(host_name("LocalHost:8088"), "localhost");
        assert_eq!(host_name("[::1]:8088"), "::1");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
        assert!(is_loopback_name("localhost"));
        assert!(is_loopback_name("127.0.0.2"));
        assert!(is_loopback_name("::1"));
        assert!(!is_loopback_name("evil.example"));
        assert!(!is_loopback_name("localhost.evil.example"));
        assert!(same_origin("http://localhost:8088", Some("localhost:8088")));
        assert!(same_origin("http://localhost", Some("localhost:80")));
        assert!(!same_origin(
            "http://localhost:3000",
            Some("localhost:8088")
        ));
        assert!(!same_origin("null", Some("localhost:8088")));
        assert!(same_origin("http://[::1]:8088", Some("[::1]:8088")));
        assert!(same_origin("http://[::1]", Some("[::1]:80")));
        assert!(json_like("application/json; charset=utf-8"));
        assert!(json_like("application/vnd.ksql.v1+json"));
        assert!(!json_like("text/plain"));
        assert!(!json_like("application/x-www-form-urlencoded"));
        assert!(!json_like(""));
    }
}
