//! `cargo run -p client-refresh` against a running login app (`cargo run -p login-app --
//! --access-ttl 5`): logs in, waits for the access token to expire, calls `/api/me` 20 times
//! at once, and prints how many refreshes it took.

use std::time::Duration;

use clap::Parser;

/// Flags.
#[derive(Debug, Parser)]
struct Args {
    /// The login app.
    #[arg(long, default_value = "http://localhost:3000")]
    url: String,
    /// User to register (if new) and log in as.
    #[arg(long, default_value = "client-demo")]
    username: String,
    /// Password.
    #[arg(long, default_value = "client-demo-password")]
    password: String,
    /// Seconds to wait before the calls (longer than the app's --access-ttl).
    #[arg(long, default_value_t = 6)]
    wait: u64,
    /// Concurrent calls.
    #[arg(long, default_value_t = 20)]
    concurrency: usize,
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    println!(
        "logged in; waiting {} s for the access token to expire...",
        args.wait
    );
    let report = client_refresh::run(
        &args.url,
        &args.username,
        &args.password,
        Duration::from_secs(args.wait),
        args.concurrency,
    )
    .await?;
    println!(
        "{} calls answered 200, {} failed, after {} refresh(es)",
        report.ok, report.failed, report.refreshes
    );
    Ok(())
}
