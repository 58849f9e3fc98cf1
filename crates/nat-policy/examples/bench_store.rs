//! Cost of one learning iteration through the store as the reward history grows.
//!
//! One iteration = sample 16 transformations (stored), record their 16 rewards, one
//! `PolicyDriver::step` (read unconsumed rewards, update, commit checkpoint + consumption in one
//! transaction). Before measuring, `history` rewards are stored and consumed. The policy uses
//! small dimensions (E = 8, F = 32, G = 16) so the store's share of the cost is what is measured.
//!
//! Run: `cargo run -p nat-policy --example bench_store -- HISTORY [DATABASE_URL]`
//! (default URL: a SQLite file in a temporary directory).

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use nat_arch::sampler::sample_genotype;
use nat_arch::OpSet;
use nat_policy::driver::PolicyDriver;
use nat_policy::{ActionSpace, PolicyConfig, Profile};
use nat_store::{Completion, NewJob};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let history: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let dir = tempfile_dir()?;
    let url = args
        .next()
        .unwrap_or_else(|| format!("sqlite://{}/bench.db", dir.display()));
    let store = nat_store::connect(&url).await?;
    let job = NewJob {
        kind: "optimize".into(),
        spec: serde_json::json!({"bench": "policy"}),
        priority: 0,
        completion: Completion::Manual,
        owner: None,
    };
    let job = store.create_job(job, Vec::new(), Utc::now()).await?.id;
    let mut config = PolicyConfig::new(ActionSpace::NatPlusPlus, Profile::Default);
    config.embed_dim = 8;
    config.feature_dim = 32;
    config.hidden_dim = 16;
    config.learn.max_staleness = u64::MAX / 2;
    let policy_id = format!("bench-{}", std::process::id());
    let driver = Arc::new(
        PolicyDriver::open(store.clone(), &policy_id, config, 1, Some(job), Utc::now()).await?,
    );
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let fill = Instant::now();
    let mut stored = 0;
    while stored < history {
        let chunk = (history - stored).min(1000);
        let inputs: Vec<_> = (0..chunk)
            .map(|_| sample_genotype(OpSet::NatPlusPlus, 4, &mut rng))
            .collect();
        let drawn = driver
            .sample(job, inputs, 1, stored as u64, Utc::now())
            .await?;
        for (i, (id, _)) in drawn.iter().enumerate() {
            driver.record_reward(*id, (i % 10) as f64 * 0.01).await?;
        }
        driver.step(1000, Utc::now()).await?;
        stored += chunk;
    }
    println!(
        "history: {history} rewards stored and consumed in {:.1} s ({})",
        fill.elapsed().as_secs_f64(),
        store.backend()
    );
    let iterations = 30;
    let mut times = Vec::new();
    for it in 0..iterations {
        let start = Instant::now();
        let inputs: Vec<_> = (0..16)
            .map(|_| sample_genotype(OpSet::NatPlusPlus, 4, &mut rng))
            .collect();
        let drawn = driver
            .sample(job, inputs, 1, 1_000_000 + it, Utc::now())
            .await?;
        for (id, _) in &drawn {
            driver.record_reward(*id, 0.05).await?;
        }
        driver.step(16, Utc::now()).await?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "| {} | {history} | {:.2} | {:.2} |",
        store.backend(),
        times[times.len() / 2],
        times[times.len() * 9 / 10]
    );
    drop(driver);
    drop(store);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("nat-policy-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
