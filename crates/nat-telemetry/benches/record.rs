//! Cost of the one-line recording functions with the Prometheus recorder installed, and of
//! rendering `/metrics`. Plain `Instant` timing (no bench framework): run with
//! `cargo bench -p nat-telemetry --bench record`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use nat_telemetry::*;

fn time(name: &str, iterations: u32, mut f: impl FnMut(u32)) {
    // Warm up (series creation happens on first use).
    for i in 0..1000 {
        f(i);
    }
    let start = Instant::now();
    for i in 0..iterations {
        f(black_box(i));
    }
    let per = start.elapsed().as_secs_f64() / f64::from(iterations);
    println!("{name:<48} {:>10.1} ns/call", per * 1e9);
}

fn main() {
    let handle = install_prometheus().expect("install");
    let n = 1_000_000;
    time("record::task_leased (counter)", n, |_| {
        record::task_leased(TaskKind::TrainEval);
    });
    time("record::task_finished (counter, 2 labels)", n, |_| {
        record::task_finished(TaskKind::TrainEval, TaskOutcome::Succeeded);
    });
    time("record::lease_task_rpc (histogram)", n, |i| {
        record::lease_task_rpc(
            LeaseResult::Leased,
            Duration::from_micros(u64::from(i % 5000)),
        );
    });
    time("record::set_tasks (gauge)", n, |i| {
        record::set_tasks(TaskState::Ready, u64::from(i));
    });
    time(
        "record::worker_gpu_memory (gauge, formatted label)",
        n / 10,
        |i| record::worker_gpu_memory(i % 8, 1 << 30, 80 << 30),
    );
    handle.run_upkeep();
    let start = Instant::now();
    let mut bytes = 0;
    for _ in 0..100 {
        bytes = black_box(handle.render()).len();
    }
    println!(
        "{:<48} {:>10.1} µs/render ({bytes} bytes)",
        "MetricsHandle::render",
        start.elapsed().as_secs_f64() / 100.0 * 1e6
    );
}
