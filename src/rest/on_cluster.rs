//! The REST-compatible layer over the shared store: the same parsing and
//! rendering as [`call`](super::call), the call run on a [`Cluster`].

use super::Response;
use super::params::Params;
use super::request::{Request, as_increments};
use super::response::{Data, Envelope};
use crate::cluster::Cluster;
use crate::error::Result;

/// Answers one request on the shared store, exactly as [`call`](super::call)
/// answers it on the embedded engine: same parameters, same bodies, same
/// error codes; a store that cannot answer is 500001.
pub async fn call_cluster(cluster: &Cluster, method: &str, params: &[(&str, &str)]) -> Response {
    let params = Params::new(params);
    let (envelope, envelope_error) = Envelope::parse(&params);
    let outcome = match envelope_error {
        Some(err) => Err(err),
        None => match Request::parse(method, &params, cluster.config()) {
            Ok(request) => execute(cluster, request).await,
            Err(err) => Err(err),
        },
    };
    envelope.respond(cluster.now_millis(), outcome)
}

/// Runs a parsed request on the shared store.
async fn execute(cluster: &Cluster, request: Request<'_>) -> Result<Data> {
    match request {
        Request::Register(keys) => cluster.register(keys).await.map(|()| Data::Nothing),
        Request::Unregister(keys) => cluster.unregister(keys).await.map(|()| Data::Nothing),
        Request::Registered => Ok(Data::Registered(cluster.registered().await?)),
        Request::Increment { subject, entries } => cluster
            .increment(subject, &as_increments(&entries))
            .await
            .map(|()| Data::Nothing),
        Request::BadIncrement {
            subject,
            before,
            error,
        } => {
            if let Some(before) = &before {
                cluster
                    .check_increment(subject, &as_increments(before))
                    .await?;
            }
            Err(error)
        }
        Request::Get { subject, selectors } => {
            Ok(Data::Rows(cluster.get(subject, &selectors).await?))
        }
    }
}
