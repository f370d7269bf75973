//! The request handler: HTTP method, body, parameters, authorization, and
//! then the REST layer on the store served: [`rest::call`] on the embedded
//! engine (on a blocking thread unless told otherwise), or
//! `rest::call_cluster` on the shared store.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::Options;
use super::auth::RequestInfo;
use super::envelope::{error_response, limited};
use super::form::{self, Source};
use super::serve::ReceiveBy;
use crate::engine::Tally;
use crate::error::Error;
use crate::rest;

/// What every request shares.
pub(super) struct AppState {
    pub store: Served,
    pub options: Options,
}

/// The store a router answers from.
pub(super) enum Served {
    /// The in-process engine.
    Embedded(Tally),
    /// The shared store on Redis Cluster.
    #[cfg(feature = "redis")]
    Cluster(crate::cluster::Cluster),
}

impl Served {
    fn now_millis(&self) -> i64 {
        match self {
            Served::Embedded(engine) => engine.now_millis(),
            #[cfg(feature = "redis")]
            Served::Cluster(cluster) => cluster.now_millis(),
        }
    }
}

/// How long `/healthz` waits for the shared store before it reports it
/// unreachable.
#[cfg(feature = "redis")]
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

type Params = Vec<(String, String)>;

/// Answers one request to `/<method>`, mounted or not (an unknown method
/// gets the REST layer's own answer).
pub(super) async fn handle(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or_default();
    let mut params = match form::decode(query.as_bytes(), Source::Query) {
        Ok(params) => params,
        Err(error) => return reply(&state, &[], &error),
    };
    let is_post = parts.method == Method::POST;
    if !is_post && parts.method != Method::GET {
        let error = Error::InvalidValue {
            name: "HTTP method".into(),
            reason: format!("{} is not supported: send GET or POST", parts.method),
        };
        let mut response = reply(&state, &params, &error);
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, POST"));
        return response;
    }
    if is_post {
        let read = read_form(&state.options, &parts.headers, body);
        let read = match parts.extensions.get::<ReceiveBy>() {
            None => read.await,
            Some(deadline) => tokio::select! {
                biased;
                read = read => read,
                () = deadline.passed() => return too_slow(&state, &params, deadline.limit()),
            },
        };
        match read {
            Ok(body_params) => params.extend(body_params),
            Err(error) => return reply(&state, &params, &error),
        }
    }
    if let Some(auth) = &state.options.auth {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>();
        let info = RequestInfo {
            method: parts.method.as_str(),
            path: &path,
            host: parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok()),
            loopback: peer.is_some_and(|ConnectInfo(addr)| is_loopback(addr.ip())),
            now_ms: state.store.now_millis(),
        };
        if let Err(error) = auth.check(&info, &borrowed(&params)) {
            return reply(&state, &params, &error);
        }
    }
    let method = path.strip_prefix('/').unwrap_or(&path).to_owned();
    let engine = match &state.store {
        Served::Embedded(engine) => engine,
        #[cfg(feature = "redis")]
        Served::Cluster(cluster) => {
            return into_http(rest::call_cluster(cluster, &method, &borrowed(&params)).await);
        }
    };
    if !state.options.blocking_pool {
        return into_http(rest::call(engine, &method, &borrowed(&params)));
    }
    let engine = engine.clone();
    let answer =
        tokio::task::spawn_blocking(move || rest::call(&engine, &method, &borrowed(&params))).await;
    match answer {
        Ok(response) => into_http(response),
        Err(_) => {
            let error = Error::io(
                "answering the request",
                std::io::Error::other("the request handler panicked"),
            );
            reply(&state, &[], &error)
        }
    }
}

/// `GET /healthz`: `{"status":"ok"}` with 200; on the shared store, when
/// the cluster does not answer within two seconds or is not whole,
/// `{"status":"unavailable","reason":"…"}` with 503.
pub(super) async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    let content_type = [(header::CONTENT_TYPE, rest::JSON_CONTENT_TYPE)];
    match &state.store {
        Served::Embedded(_) => (content_type, r#"{"status":"ok"}"#).into_response(),
        #[cfg(feature = "redis")]
        Served::Cluster(cluster) => {
            let health = match tokio::time::timeout(HEALTH_TIMEOUT, cluster.check_health()).await {
                Ok(health) => health,
                Err(_) => Err(crate::cluster::unavailable(format!(
                    "no answer within {} s",
                    HEALTH_TIMEOUT.as_secs()
                ))),
            };
            match health {
                Ok(()) => (content_type, r#"{"status":"ok"}"#).into_response(),
                Err(error) => {
                    let body = serde_json::json!({
                        "status": "unavailable",
                        "reason": error.to_string(),
                    });
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        content_type,
                        body.to_string(),
                    )
                        .into_response()
                }
            }
        }
    }
}

/// The parameters of a form-encoded body, or the error that stops the request.
async fn read_form(options: &Options, headers: &HeaderMap, body: Body) -> Result<Params, Error> {
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        let text = content_type.to_str().unwrap_or_default();
        let essence = text.split(';').next().unwrap_or_default().trim();
        if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            let error = Error::InvalidValue {
                name: "Content-Type".into(),
                reason: format!(
                    "{:?} is not supported: send application/x-www-form-urlencoded",
                    limited(text)
                ),
            };
            return Err(error);
        }
    }
    let too_large = || Error::InvalidValue {
        name: "body".into(),
        reason: format!(
            "the request body exceeds the limit of {} bytes",
            options.body_limit
        ),
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > options.body_limit as u64) {
        return Err(too_large());
    }
    let bytes = match Limited::new(body, options.body_limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<LengthLimitError>() => return Err(too_large()),
        Err(error) => {
            let error = Error::InvalidValue {
                name: "body".into(),
                reason: format!("the request body could not be read: {error}"),
            };
            return Err(error);
        }
    };
    form::decode(&bytes, Source::Body)
}

/// The envelope for a request whose body did not arrive within the request
/// timeout, closing the connection (the rest of the body is not read).
fn too_slow(state: &AppState, params: &[(String, String)], limit: Duration) -> Response {
    let error = Error::InvalidValue {
        name: "body".into(),
        reason: format!(
            "the request did not arrive in full within the request timeout of {} s",
            limit.as_secs_f64()
        ),
    };
    let mut response = reply(state, params, &error);
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

/// The envelope for an error the HTTP layer raises, answered like the
/// REST layer's own (HTTP 200 unless `httpStatusCodes=true`).
fn reply(state: &AppState, params: &[(String, String)], error: &Error) -> Response {
    into_http(error_response(
        state.store.now_millis(),
        &borrowed(params),
        error,
    ))
}

fn into_http(response: rest::Response) -> Response {
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, response.content_type)],
        response.body,
    )
        .into_response()
}

fn borrowed(params: &[(String, String)]) -> Vec<(&str, &str)> {
    params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}
