//! Rate limits shared through a test-started PostgreSQL: one budget for every instance, exact
//! under concurrency (fifty checks at once of a fresh key let exactly the burst through),
//! peeks that count nothing, a database that does not answer letting requests through, and a
//! bounded sweep of full buckets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_core::{RateLimiter, Rule, TestClock};
use baton_postgres::PgLimiter;
use baton_test::PgServer;

async fn limiter(url: &str, clock: &TestClock) -> PgLimiter {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    PgLimiter::new(pool, "baton_")
        .await
        .unwrap()
        .with_clock(Arc::new(clock.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_one_budget_and_peeks_count_nothing() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.create_database();
    let clock = TestClock::at_millis(1_800_000_000_000);
    let a = limiter(&url, &clock).await;
    let b = limiter(&url, &clock).await;
    let rule = Rule::new(60, 3);
    for i in 0..3 {
        let on = if i % 2 == 0 { &a } else { &b };
        assert_eq!(on.peek("login-ip", "10.0.0.1", rule).await, Ok(()));
        assert_eq!(on.check("login-ip", "10.0.0.1", rule).await, Ok(()), "{i}");
    }
    let wait = b.check("login-ip", "10.0.0.1", rule).await.unwrap_err();
    assert!(
        wait > Duration::from_millis(900) && wait <= Duration::from_millis(1000),
        "{wait:?}"
    );
    assert!(a.peek("login-ip", "10.0.0.1", rule).await.is_err());
    // Another key, another bucket; a peek of a key never seen is not over.
    assert_eq!(a.check("login-ip", "10.0.0.2", rule).await, Ok(()));
    assert_eq!(a.peek("login-ip", "10.9.9.9", rule).await, Ok(()));
    clock.advance(Duration::from_secs(1));
    assert_eq!(a.check("login-ip", "10.0.0.1", rule).await, Ok(()));
    assert!(b.check("login-ip", "10.0.0.1", rule).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_checks_at_once_let_exactly_the_burst_through() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.create_database();
    let clock = TestClock::at_millis(1_800_000_000_000);
    let limiter = limiter(&url, &clock).await;
    let rule = Rule::new(1, 10);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.check("register-net", "fresh", rule).await })
        })
        .collect();
    let mut allowed = 0;
    for task in tasks {
        if task.await.unwrap().is_ok() {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_does_not_answer_lets_requests_through() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.create_database();
    let clock = TestClock::at_millis(1_800_000_000_000);
    let limiter = limiter(&url, &clock).await;
    let rule = Rule::new(60, 1);
    assert_eq!(limiter.check("login-ip", "k", rule).await, Ok(()));
    assert!(limiter.check("login-ip", "k", rule).await.is_err());
    server.pause();
    let started = Instant::now();
    let answer = limiter.check("login-ip", "k", rule).await;
    let took = started.elapsed();
    server.resume();
    assert_eq!(answer, Ok(()), "let through, not stuck");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_buckets_are_swept_a_batch_at_a_time() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let url = server.create_database();
    let clock = TestClock::at_millis(1_800_000_000_000);
    let limiter = limiter(&url, &clock).await;
    let rule = Rule::new(60, 5);
    for i in 0..1_200 {
        limiter
            .check("login-ip", &format!("10.0.{}.{}", i / 256, i % 256), rule)
            .await
            .unwrap();
    }
    assert_eq!(
        limiter.sweep().await.unwrap(),
        0,
        "every bucket still counts"
    );
    clock.advance(Duration::from_secs(2));
    assert_eq!(limiter.sweep().await.unwrap(), 1_000);
    assert_eq!(limiter.sweep().await.unwrap(), 200);
}
