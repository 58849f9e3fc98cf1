//! Throughput of the operations other components call per request or per sample.
//!
//! ```sh
//! cargo run --release -p nat-arch --example bench [-- ITERATIONS]
//! ```
//! Prints mean time per call (wall clock, single thread) for each operation on the `darts-v2`
//! and `enas` presets and on sampled genotypes.

use std::hint::black_box;
use std::time::Instant;

use nat_arch::{
    cost::NetworkSpec, network_cost, parse_any, presets, render, sampler, Genotype, OpSet, Space,
};

fn time<T>(name: &str, iters: u64, mut f: impl FnMut(u64) -> T) {
    // Warm up.
    for i in 0..iters / 10 + 1 {
        black_box(f(i));
    }
    let start = Instant::now();
    for i in 0..iters {
        black_box(f(i));
    }
    let ns = start.elapsed().as_nanos() as f64 / iters as f64;
    println!("{name:<44} {:>10.2} µs/call  ({iters} calls)", ns / 1e3);
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let iters: u64 = match std::env::args().nth(1) {
        Some(s) => s.parse().map_err(|e| format!("ITERATIONS `{s}`: {e}"))?,
        None => 20_000,
    };
    let darts = presets::get("darts-v2")
        .ok_or("no darts-v2 preset")?
        .genotype();
    let darts_nat = presets::get("darts-v2.nat").ok_or("no preset")?.genotype();
    let enas = presets::get("enas").ok_or("no enas preset")?.genotype();
    let json = darts.to_json();
    let darts_str = darts.to_darts_string();
    let text = darts.to_text();

    time("Genotype::from_json_str (darts-v2)", iters, |_| {
        Genotype::from_json_str(&json)
    });
    time("serde_json::from_str::<Genotype> (darts-v2)", iters, |_| {
        serde_json::from_str::<Genotype>(&json).map_err(|e| e.to_string())
    });
    time("Genotype::to_json (darts-v2)", iters, |_| darts.to_json());
    time("Genotype::from_darts_str (darts-v2)", iters, |_| {
        Genotype::from_darts_str(&darts_str)
    });
    time("Genotype::to_darts_string (darts-v2)", iters, |_| {
        darts.to_darts_string()
    });
    time("Genotype::from_text (darts-v2)", iters, |_| {
        Genotype::from_text(&text)
    });
    time("parse_any (preset name)", iters, |_| parse_any("darts-v2"));
    time("canonical_hash (darts-v2)", iters, |_| {
        darts.canonical_hash()
    });
    time("canonical_hash (enas, B=5)", iters, |_| {
        enas.canonical_hash()
    });
    time(
        "Space::Nat.check_transition (darts-v2 -> .nat)",
        iters,
        |_| Space::Nat.check_transition(&darts, &darts_nat),
    );
    time("Space::NatPlusPlus.mask (13 ops)", iters, |i| {
        let ops = OpSet::NatPlusPlus.ops();
        Space::NatPlusPlus.mask(ops[(i as usize) % ops.len()])
    });
    time("sample_genotype_seeded (NAT++, B=4)", iters, |i| {
        sampler::sample_genotype_seeded(OpSet::NatPlusPlus, 4, i)
    });
    let spec = NetworkSpec::cifar10();
    time("network_cost (darts-v2, C=36, L=20)", iters, |_| {
        network_cost(&darts, &spec)
    });
    time("render::genotype_svg (darts-v2)", iters / 10 + 1, |_| {
        render::genotype_svg(&darts, "darts-v2")
    });
    Ok(())
}
