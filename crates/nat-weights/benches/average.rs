//! Averaging a 10 M-parameter supernet's shards (issue #14): `cargo bench -p nat-weights --bench
//! average`.
//!
//! The model is ResNet-shaped: a stem and ten 3×3 convolutions (64 → 512 channels), each followed
//! by BatchNorm (weight, bias, running mean and variance in F32, `num_batches_tracked` in I64),
//! and a 512 → 1000 classifier: 68 tensors, 9,963,944 parameters, ≈ 40 MB as F32 safetensors.
//! Eight distinct shard documents are generated (the shared weights plus per-shard noise); a run
//! of N shards adds them round-robin (N = 64 adds each 8 times: each add still reads 40 MB from
//! memory, far more than any cache holds between two uses of the same document), then finishes.
//!
//! The parent process generates the documents once and writes them to a temporary directory; every
//! run is a fresh child process (this executable with `NAT_WEIGHTS_BENCH_SHARDS=N` and
//! `NAT_WEIGHTS_BENCH_DIR`) that reads them (one exact-size allocation each) and then averages, so
//! that its peak memory (`VmHWM`, reset through `/proc/self/clear_refs` after the inputs are read,
//! minus `VmRSS` at that point) is not blurred by memory an earlier step freed and the allocator
//! kept. Runs alternate 8, 64, 8, 64, 8, 64;
//! the tables give each run and the medians, and the ratios 64 / 8 within this invocation.

use std::collections::BTreeMap;
use std::error::Error;
use std::process::Command;
use std::time::{Duration, Instant};

use nat_weights::{inspect, read_f32, Averager};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const CHILD_VAR: &str = "NAT_WEIGHTS_BENCH_SHARDS";
const DIR_VAR: &str = "NAT_WEIGHTS_BENCH_DIR";
const DISTINCT: usize = 8;
const REPEATS: usize = 3;
const SHARD_COUNTS: [usize; 2] = [8, 64];

struct TensorSpec {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
}

fn model_spec() -> Vec<TensorSpec> {
    let convs = [
        (64, 3),
        (64, 64),
        (64, 64),
        (128, 64),
        (128, 128),
        (256, 128),
        (256, 256),
        (512, 256),
        (512, 512),
        (512, 512),
        (512, 512),
    ];
    let mut spec = Vec::new();
    for (i, (out, inp)) in convs.into_iter().enumerate() {
        let f32_tensor = |suffix: &str, shape: Vec<usize>| TensorSpec {
            name: format!("cells.{i:02}.{suffix}"),
            dtype: Dtype::F32,
            shape,
        };
        spec.push(f32_tensor("conv.weight", vec![out, inp, 3, 3]));
        for bn in ["bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"] {
            spec.push(f32_tensor(bn, vec![out]));
        }
        spec.push(TensorSpec {
            name: format!("cells.{i:02}.bn.num_batches_tracked"),
            dtype: Dtype::I64,
            shape: vec![],
        });
    }
    spec.push(TensorSpec {
        name: "classifier.weight".into(),
        dtype: Dtype::F32,
        shape: vec![1000, 512],
    });
    spec.push(TensorSpec {
        name: "classifier.bias".into(),
        dtype: Dtype::F32,
        shape: vec![1000],
    });
    spec
}

/// `DISTINCT` shard documents: shared base weights plus per-shard noise.
fn shard_documents(spec: &[TensorSpec]) -> Result<Vec<Vec<u8>>> {
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    let base: Vec<Vec<f32>> = spec
        .iter()
        .map(|t| {
            let n: usize = t.shape.iter().product();
            let positive = t.name.ends_with("running_var") || t.name.ends_with("bn.weight");
            (0..n)
                .map(|_| {
                    if positive {
                        rng.gen_range(0.5f32..1.5)
                    } else {
                        rng.gen_range(-0.05f32..0.05)
                    }
                })
                .collect()
        })
        .collect();
    let mut docs = Vec::with_capacity(DISTINCT);
    for shard in 0..DISTINCT {
        let data: Vec<Vec<u8>> = spec
            .iter()
            .zip(&base)
            .map(|(t, values)| match t.dtype {
                Dtype::I64 => (1000 + shard as i64).to_le_bytes().to_vec(),
                _ => values
                    .iter()
                    .flat_map(|v| (v + rng.gen_range(-0.01f32..0.01)).to_le_bytes())
                    .collect(),
            })
            .collect();
        let views = spec
            .iter()
            .zip(&data)
            .map(|(t, d)| {
                Ok((
                    t.name.as_str(),
                    TensorView::new(t.dtype, t.shape.clone(), d)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        docs.push(safetensors::serialize(views, None)?);
    }
    Ok(docs)
}

fn proc_status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One run in this (child) process; prints one `RESULT` line of `key=value` pairs.
fn child(shards: usize, dir: &str) -> Result<()> {
    let docs = (0..DISTINCT)
        .map(|i| std::fs::read(format!("{dir}/shard-{i}.safetensors")))
        .collect::<std::io::Result<Vec<Vec<u8>>>>()?;
    let mut inspect_ms: Vec<f64> = Vec::new();
    for doc in &docs {
        let t = Instant::now();
        inspect(doc)?;
        inspect_ms.push(ms(t.elapsed()));
    }
    let summary = inspect(&docs[0])?;

    let hwm_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let rss_before = proc_status_kb("VmRSS:").unwrap_or(0);
    let metadata = BTreeMap::from([("version".to_owned(), "1".to_owned())]);

    let start = Instant::now();
    let mut averager = Averager::new();
    let mut add_ms = Vec::with_capacity(shards);
    for k in 0..shards {
        let t = Instant::now();
        averager.add(&docs[k % docs.len()], 1.0)?;
        add_ms.push(ms(t.elapsed()));
    }
    let accumulator_bytes = averager.accumulator_bytes();
    let t = Instant::now();
    let out = averager.finish(metadata)?;
    let finish_ms = ms(t.elapsed());
    let total_ms = ms(start.elapsed());
    let hwm = proc_status_kb("VmHWM:").unwrap_or(0);

    // The result is the mean of the distinct documents (each appears shards / DISTINCT times).
    let mut checked = 0usize;
    for name in [
        "classifier.bias",
        "cells.00.conv.weight",
        "cells.10.bn.running_var",
    ] {
        let (_, got) = read_f32(&out, name)?;
        let inputs = docs
            .iter()
            .map(|d| read_f32(d, name).map(|(_, v)| v))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        for (i, g) in got.iter().enumerate() {
            let naive = inputs.iter().map(|x| f64::from(x[i])).sum::<f64>() / inputs.len() as f64;
            if (f64::from(*g) - naive).abs() > naive.abs() * f64::from(f32::EPSILON) {
                return Err(format!("{name}[{i}]: {g} is not the mean {naive}").into());
            }
            checked += 1;
        }
    }

    let first_add = add_ms[0];
    let rest_median = median(&mut add_ms.clone()[1..].to_vec());
    let add_sum: f64 = add_ms.iter().sum();
    println!(
        "RESULT shards={shards} doc_bytes={} params={} tensors={} out_bytes={} total_ms={total_ms:.3} \
         add_sum_ms={add_sum:.3} add_first_ms={first_add:.3} add_median_ms={rest_median:.3} \
         finish_ms={finish_ms:.3} inspect_ms={:.3} acc_bytes={accumulator_bytes} \
         hwm_reset={hwm_reset} extra_kb={} checked={checked}",
        docs[0].len(),
        summary.parameters,
        summary.tensors,
        out.len(),
        median(&mut inspect_ms),
        hwm.saturating_sub(rss_before),
    );
    Ok(())
}

#[derive(Debug, Default)]
struct Run {
    fields: BTreeMap<String, String>,
}

impl Run {
    fn parse(line: &str) -> Run {
        let fields = line
            .split_whitespace()
            .skip(1)
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Run { fields }
    }

    fn num(&self, key: &str) -> Result<f64> {
        let value = self
            .fields
            .get(key)
            .ok_or_else(|| format!("child output lacks {key}"))?;
        Ok(value.parse()?)
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn mb(bytes: f64) -> f64 {
    bytes / 1e6
}

fn main() -> Result<()> {
    if let (Ok(shards), Ok(dir)) = (std::env::var(CHILD_VAR), std::env::var(DIR_VAR)) {
        return child(shards.parse()?, &dir);
    }
    let exe = std::env::current_exe()?;
    let dir = tempfile::tempdir()?;
    for (i, doc) in shard_documents(&model_spec())?.iter().enumerate() {
        std::fs::write(dir.path().join(format!("shard-{i}.safetensors")), doc)?;
    }
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    println!("nat-weights averaging benchmark (issue #14)");
    println!("CPU: {} ({cpus} logical CPUs)", cpu_model());
    println!("load average at start (1, 5, 15 min): {}", load_average());
    println!();

    let mut runs: Vec<(usize, Run, String)> = Vec::new();
    for _ in 0..REPEATS {
        for shards in SHARD_COUNTS {
            let output = Command::new(&exe)
                .env(CHILD_VAR, shards.to_string())
                .env(DIR_VAR, dir.path())
                .output()?;
            if !output.status.success() {
                return Err(format!(
                    "child with {shards} shards failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                )
                .into());
            }
            let stdout = String::from_utf8(output.stdout)?;
            let line = stdout
                .lines()
                .find(|l| l.starts_with("RESULT "))
                .ok_or("child printed no RESULT line")?;
            runs.push((shards, Run::parse(line), load_average()));
        }
    }

    let first = &runs[0].1;
    println!(
        "model: {} tensors, {} parameters, {:.2} MB per shard document; output keeps the dtypes ({:.2} MB)",
        first.num("tensors")?,
        first.num("params")?,
        mb(first.num("doc_bytes")?),
        mb(first.num("out_bytes")?),
    );
    println!(
        "accumulators: {:.2} MB (f64 per float element, i64 per counter); accumulators + output: {:.2} MB; inspect (parse + finiteness check) of one shard: {:.2} ms (run 1)",
        mb(first.num("acc_bytes")?),
        mb(first.num("acc_bytes")? + first.num("out_bytes")?),
        first.num("inspect_ms")?,
    );
    println!();
    println!(
        "| run | shards | bytes in (MB) | bytes out (MB) | average: add all + finish (ms) | first add (ms) | add, median of the rest (ms) | input GB/s (all adds) | finish (ms) | peak extra memory (MB, VmHWM − VmRSS before) | values checked | load average after |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, (shards, run, load)) in runs.iter().enumerate() {
        let bytes_in = run.num("doc_bytes")? * *shards as f64;
        let extra = if run.fields.get("hwm_reset").map(String::as_str) == Some("true") {
            format!("{:.1}", run.num("extra_kb")? * 1024.0 / 1e6)
        } else {
            "n/a (no clear_refs)".to_owned()
        };
        println!(
            "| {} | {shards} | {:.1} | {:.2} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {extra} | {} | {load} |",
            i + 1,
            mb(bytes_in),
            mb(run.num("out_bytes")?),
            run.num("total_ms")?,
            run.num("add_first_ms")?,
            run.num("add_median_ms")?,
            bytes_in / (run.num("add_sum_ms")? / 1e3) / 1e9,
            run.num("finish_ms")?,
            run.num("checked")?,
        );
    }

    let med = |shards: usize, key: &str| -> Result<f64> {
        let mut values = runs
            .iter()
            .filter(|(s, _, _)| *s == shards)
            .map(|(_, r, _)| r.num(key))
            .collect::<Result<Vec<f64>>>()?;
        Ok(median(&mut values))
    };
    println!();
    println!("| medians over {REPEATS} runs | 8 shards | 64 shards | 64 / 8 |");
    println!("|---|---|---|---|");
    for (label, key) in [
        ("average: add all + finish (ms)", "total_ms"),
        ("add, median (ms)", "add_median_ms"),
        ("finish (ms)", "finish_ms"),
        ("peak extra memory (MB)", "extra_kb"),
    ] {
        let scale = if key == "extra_kb" { 1024.0 / 1e6 } else { 1.0 };
        let (a, b) = (med(8, key)? * scale, med(64, key)? * scale);
        println!("| {label} | {a:.1} | {b:.1} | {:.2}× |", b / a);
    }
    let per_shard = |shards: usize| -> Result<f64> { Ok(med(shards, "total_ms")? / shards as f64) };
    println!(
        "| average per shard (ms) | {:.2} | {:.2} | {:.2}× |",
        per_shard(8)?,
        per_shard(64)?,
        per_shard(64)? / per_shard(8)?
    );
    println!();
    println!("load average at end (1, 5, 15 min): {}", load_average());
    Ok(())
}
