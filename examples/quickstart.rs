//! Registers counters, increments them for a user, and prints the rows a
//! `getCounters` call would return, first typed and then through the
//! REST-compatible layer.
//!
//! Run it with `cargo run --release --example quickstart`.

use tally::{Increment, Selector, Tally};

fn main() -> Result<(), tally::Error> {
    let engine = Tally::builder().build()?;
    engine.register([
        ("shares", "/news"),
        ("shares", "/news/sport"),
        ("_purchases", "/"),
    ])?;

    // A batch is all-or-nothing: every entry is checked before any applies.
    engine.increment(
        "user-1",
        &[
            Increment::new("shares", "/news/sport"),
            Increment::new("shares", "/news"),
            Increment::new("_purchases", "/").value(200),
        ],
    )?;

    // The hot path: resolve the counter once, then increment through the handle.
    let sport = engine.counter("shares", "/news/sport")?;
    for _ in 0..3 {
        engine.increment_counter("user-1", &sport, 1, 0)?;
    }

    println!(
        "{:<12} {:<12} {:<10} {:>5} {:>6}  lastUpdated",
        "class", "path", "period", "count", "value"
    );
    let selectors = [
        Selector::class("shares"),
        Selector::class("shares")
            .path("/news/sport")
            .period("last7Days"),
        Selector::class("_purchases"),
    ];
    for row in engine.get("user-1", &selectors)? {
        println!(
            "{:<12} {:<12} {:<10} {:>5} {:>6}  {}",
            row.class,
            row.path,
            row.period.to_string(),
            row.count,
            row.value,
            row.last_updated
        );
    }

    // A bad request is rejected with a typed error and a platform code.
    let error = engine
        .increment("user-1", &[Increment::new("shares", "/unregistered")])
        .unwrap_err();
    println!("\nrejected: {error} (errorCode {})", error.code().number());
    Ok(())
}
