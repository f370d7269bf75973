//! A node that lost its script cache (a restart, a promoted replica, a
//! `SCRIPT FLUSH`) answers `NOSCRIPT`: the batch is sent again with the
//! script itself, applied once, and later batches run as before.

mod cluster_support;

use cluster_support::{fresh_namespace, redis_cli, shared_seeds};
use tally::cluster::Cluster;
use tally::{Increment, Selector};

const UID: &str = "9b1f4e2c7a3d5860f1e2d3c4b5a69788";

#[test]
fn cluster_batches_survive_a_flushed_script_cache() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let seeds = shared_seeds();
        let cluster = Cluster::builder(&seeds)
            .namespace(fresh_namespace("script-reload"))
            .connect()
            .await
            .unwrap();
        cluster.register([("c", "/a")]).await.unwrap();
        let entry = [Increment::new("c", "/a").value(5)];
        cluster.increment(UID, &entry).await.unwrap();

        for seed in &seeds {
            let port: u16 = seed.rsplit(':').next().unwrap().parse().unwrap();
            assert_eq!(redis_cli(port, &["SCRIPT", "FLUSH"]).trim(), "OK");
        }
        cluster.increment(UID, &entry).await.unwrap();
        cluster.increment(UID, &entry).await.unwrap();

        let rows = cluster
            .get(UID, &[Selector::class("c").path("/a")])
            .await
            .unwrap();
        let total: Vec<(i64, i64)> = rows
            .iter()
            .filter(|r| r.period == tally::Period::Total)
            .map(|r| (r.count, r.value))
            .collect();
        assert_eq!(total, [(3, 15)], "{rows:?}");
    });
}
