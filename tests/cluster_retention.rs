//! Retention in place on the shared store: the script deletes a
//! counter's months and days that retention no longer keeps when it first
//! writes the counter in a new month or day, and keeps their amounts in
//! the total. Read with raw `HKEYS`, since reads never show such buckets.

mod cluster_support;

use std::time::Duration;

use cluster_support::{fresh_namespace, shared_seeds};
use redis::AsyncCommands;
use tally::cluster::Cluster;
use tally::{Config, Increment, ManualClock, Selector};

const UID: &str = "3c9f0e1d2b4a59687a6b5c4d3e2f1a0b";
const DAY: u64 = 86_400;

/// The fields of the subject's hash, sorted.
async fn fields(seeds: &[String], namespace: &str) -> Vec<String> {
    let nodes: Vec<String> = seeds.iter().map(|s| format!("redis://{s}")).collect();
    let client = redis::cluster::ClusterClient::new(nodes).unwrap();
    let mut connection = client.get_async_connection().await.unwrap();
    let mut fields: Vec<String> = connection
        .hkeys(format!("{namespace}:{{{UID}}}"))
        .await
        .unwrap();
    fields.sort();
    fields
}

#[test]
fn cluster_old_days_and_months_are_pruned_in_place_and_stay_in_the_total() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let seeds = shared_seeds();
        let namespace = fresh_namespace("retention");
        // 2026-01-01 00:00 UTC.
        let clock = ManualClock::new(1_767_225_600);
        let cluster = Cluster::builder(&seeds)
            .namespace(&namespace)
            .clock(clock.clone())
            .config(Config {
                daily_retention: 7,
                monthly_retention: 2,
                ..Config::default()
            })
            .connect()
            .await
            .unwrap();
        cluster.register([("c", "/a")]).await.unwrap();
        let entry = [Increment::new("c", "/a").value(2)];
        cluster.increment(UID, &entry).await.unwrap();
        let first = fields(&seeds, &namespace).await;
        assert!(first.iter().any(|f| f.contains(":d")), "{first:?}");

        // Ten days on, the first day is past retention: written again, the
        // counter's old day goes, its month stays (two months kept).
        clock.advance(Duration::from_secs(10 * DAY));
        cluster.increment(UID, &entry).await.unwrap();
        let later = fields(&seeds, &namespace).await;
        let old_days: Vec<&String> = first.iter().filter(|f| f.contains(":d")).collect();
        for old in &old_days {
            assert!(!later.contains(old), "{old} kept: {later:?}");
        }
        let months = |fields: &[String]| fields.iter().filter(|f| f.contains(":m")).count();
        assert_eq!(months(&later), months(&first), "{later:?}");

        // Three months on, the January month goes too.
        clock.advance(Duration::from_secs(90 * DAY));
        cluster.increment(UID, &entry).await.unwrap();
        let last = fields(&seeds, &namespace).await;
        for january in first.iter().filter(|f| f.contains(":m")) {
            assert!(!last.contains(january), "{january} kept: {last:?}");
        }

        let rows = cluster
            .get(UID, &[Selector::class("c").path("/a")])
            .await
            .unwrap();
        assert_eq!((rows[0].count, rows[0].value), (3, 6), "{rows:?}");
    });
}
