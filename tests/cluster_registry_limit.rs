//! `max_registrations` holds cluster-wide: instances that register at
//! the same time through one cluster never register more pairs between
//! them than the limit, and every call refused is refused with
//! `TooManyRegistrations`. Each change is appended to the registry's log
//! by a script only if the log is still at the version the change was
//! checked against; without that check this test fails, as instances
//! append changes planned against the same version.

mod cluster_support;

use cluster_support::{fresh_namespace, shared_seeds};
use tally::cluster::Cluster;
use tally::{Config, Error};

const INSTANCES: usize = 4;
const LIMIT: usize = 24;
const ATTEMPTS_EACH: usize = 12;

#[test]
fn cluster_instances_registering_at_once_never_exceed_max_registrations() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let seeds = shared_seeds();
        let namespace = fresh_namespace("registry-limit");
        let config = Config {
            max_registrations: LIMIT,
            ..Config::default()
        };
        let mut instances = Vec::new();
        for _ in 0..INSTANCES {
            instances.push(
                Cluster::builder(&seeds)
                    .namespace(&namespace)
                    .config(config.clone())
                    .connect()
                    .await
                    .unwrap(),
            );
        }

        // Each instance registers pairs of its own, one call at a time,
        // all instances at once: more pairs in all than the limit allows.
        let mut callers = tokio::task::JoinSet::new();
        for (n, instance) in instances.iter().enumerate() {
            let instance = instance.clone();
            callers.spawn(async move {
                let mut registered = Vec::new();
                for attempt in 0..ATTEMPTS_EACH {
                    let path = format!("/i{n}/p{attempt}");
                    match instance.register([("c", path.as_str())]).await {
                        Ok(()) => registered.push(path),
                        Err(Error::TooManyRegistrations { max }) => assert_eq!(max, LIMIT),
                        Err(other) => panic!("registering {path}: {other:?}"),
                    }
                }
                registered
            });
        }
        let mut acknowledged: Vec<String> =
            callers.join_all().await.into_iter().flatten().collect();
        acknowledged.sort();

        // Read through an instance that registered nothing.
        let reader = Cluster::builder(&seeds)
            .namespace(&namespace)
            .config(config)
            .connect()
            .await
            .unwrap();
        let mut held: Vec<String> = reader
            .registered()
            .await
            .unwrap()
            .into_iter()
            .map(|key| key.path)
            .collect();
        held.sort();
        assert_eq!(
            held, acknowledged,
            "every acknowledged pair, and only those"
        );
        assert_eq!(held.len(), LIMIT, "the limit is reached, never passed");
    });
}
