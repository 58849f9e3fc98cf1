//! Per-update cost of the policy learner vs batch size, at the official dimensions
//! (E = 100, F = 1024, G = 100, NAT++ space, B = 4 cells).
//!
//! Run: `cargo run -p nat-policy --example bench_update` (dev profile: dependencies, candle
//! included, are built with opt-level 2 by the workspace profile). Prints a Markdown table.

use std::time::Instant;

use nat_arch::sampler::sample_genotype;
use nat_arch::OpSet;
use nat_policy::{ActionSpace, PolicyConfig, PolicyLearner, Profile};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), nat_policy::PolicyError> {
    let config = PolicyConfig::new(ActionSpace::NatPlusPlus, Profile::Default);
    let mut learner = PolicyLearner::new(config, 1)?;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    println!("parameters: {}", learner.num_parameters());
    println!("| batch M | sample M (ms) | update on M (ms) | per reward (ms) |");
    println!("|---|---|---|---|");
    for batch in [1usize, 8, 32, 64, 128] {
        let reps = if batch >= 64 { 8 } else { 16 };
        let (mut sample_ms, mut update_ms) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            let inputs: Vec<_> = (0..batch)
                .map(|_| sample_genotype(OpSet::NatPlusPlus, 4, &mut rng))
                .collect();
            let start = Instant::now();
            let samples = learner.sample(&inputs, 1, &mut rng)?;
            sample_ms.push(start.elapsed().as_secs_f64() * 1e3);
            let rewarded: Vec<_> = samples
                .into_iter()
                .enumerate()
                .map(|(i, s)| (s, (i % 7) as f64 * 0.01))
                .collect();
            let start = Instant::now();
            learner.update(&rewarded)?;
            update_ms.push(start.elapsed().as_secs_f64() * 1e3);
        }
        let (s, u) = (median(sample_ms), median(update_ms));
        println!("| {batch} | {s:.2} | {u:.2} | {:.3} |", u / batch as f64);
    }
    let bytes = learner.to_bytes()?;
    let start = Instant::now();
    let restored = PolicyLearner::from_bytes(&bytes)?;
    let load_ms = start.elapsed().as_secs_f64() * 1e3;
    println!(
        "checkpoint: {} bytes, load {load_ms:.2} ms (version {})",
        bytes.len(),
        restored.version()
    );
    Ok(())
}
