#!/usr/bin/env python3
"""Helpers of `make results` (scripts/results.sh); Python 3 standard library only.

  results_table.py meta RUN_DIR
      Writes RUN_DIR/meta.json from the R_* environment results.sh exports (commit, command,
      store, machine, wall times), RUN_DIR/jobs.tsv (job id, label, space, inputs, seconds) and
      the job files in RUN_DIR/jobs/ (the settings as submitted).

  results_table.py table RUN_DIR > docs/RESULTS.md
      Renders the results document from what results.sh saved in RUN_DIR: meta.json, the
      `natctl result --json` document of every optimize job (results/LABEL.json) and its event
      stream (results/LABEL.events.jsonl, `natctl -o json watch`). Nothing in the output is typed
      by hand; rerun it on the same RUN_DIR to regenerate the same text.
"""

import json
import os
import platform
import sys
import time

CELL_LABELS = {
    "darts-v2": "DARTS_V2",
    "resnet-block": "ResNet block",
    "vgg-block": "VGG block",
    "mobilenetv2-block": "MobileNetV2 block",
}
SPACE_LABELS = {"nat": "NAT (op → same / skip / null)", "nat++": "NAT++ (op → same / skip / null / cheaper op)"}
SPARK = "▁▂▃▄▅▆▇█"


def load(path):
    with open(path) as f:
        return json.load(f)


def fail(message):
    raise SystemExit(f"results_table: {message}")


def field(doc, path, what):
    """doc[path...] or an error naming the field (documents are typed: no silent defaults)."""
    cur = doc
    for key in path:
        if isinstance(cur, dict) and key in cur:
            cur = cur[key]
        elif isinstance(cur, list) and isinstance(key, int) and 0 <= key < len(cur):
            cur = cur[key]
        else:
            fail(f"{what}: field {'.'.join(str(p) for p in path)} is missing")
    return cur


# ----------------------------------------------------------------------------------------------
# meta


def write_meta(run_dir):
    env = os.environ
    need = ["R_STARTED", "R_COMMIT", "R_DIRTY", "R_COMMAND", "R_BACKEND", "R_BACKEND_DESCRIPTION",
            "R_THREADS", "R_LOAD_START", "R_T_START", "R_T_SETUP", "R_T_JOBS_START", "R_T_JOBS_DONE",
            "R_ITERATIONS"]
    missing = [k for k in need if k not in env]
    if missing:
        fail(f"meta: environment {', '.join(missing)} not set (run through scripts/results.sh)")
    jobs = []
    with open(os.path.join(run_dir, "jobs.tsv")) as f:
        for line in f:
            if not line.strip():
                continue
            job, label, space, cells, seconds = line.rstrip("\n").split("\t")
            jobs.append({"job": job, "label": label, "space": space, "cells": cells.split(","),
                         "wall_seconds": int(seconds),
                         "job_file": f"jobs/{label}.yaml",
                         "result_file": f"results/{label}.json",
                         "events_file": f"results/{label}.events.jsonl"})
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0.0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) / 1024 / 1024
    with open("/proc/loadavg") as f:
        load_end = " ".join(f.read().split()[:3])
    t_start = int(env["R_T_START"])
    now = int(time.time())
    meta = {
        "started_utc": env["R_STARTED"],
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": env["R_COMMIT"], "dirty": env["R_DIRTY"] == "true",
        "command": env["R_COMMAND"],
        "backend": env["R_BACKEND"], "backend_description": env["R_BACKEND_DESCRIPTION"],
        "workers": int(env.get("NAT_RESULTS_WORKERS", "2")),
        "threads_per_worker": int(env["R_THREADS"]),
        "iterations": int(env["R_ITERATIONS"]),
        "run_dir": run_dir,
        "machine": {"nproc": os.cpu_count(), "cpu_model": cpu, "mem_gib": round(mem, 1),
                    "kernel": platform.system() + " " + platform.release(),
                    "load_start": env["R_LOAD_START"], "load_end": load_end},
        "wall_seconds": {"total": now - t_start, "setup": int(env["R_T_SETUP"]) - t_start,
                         "jobs": int(env["R_T_JOBS_DONE"]) - int(env["R_T_JOBS_START"])},
        "jobs": jobs,
    }
    with open(os.path.join(run_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)


# ----------------------------------------------------------------------------------------------
# table


def pct(x):
    return "–" if x is None else f"{100.0 * x:.2f}"


def pts(x):
    return "–" if x is None else f"{100.0 * x:+.2f}"


def duration(seconds):
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h} h {m:02d} min"
    return f"{m} min {s:02d} s"


def interval(d):
    if not d or d.get("mean") is None:
        return "–"
    if d.get("ci_low") is None or d.get("ci_high") is None:
        return f"{pts(d['mean'])} (one seed: no interval)"
    return f"{pts(d['mean'])} [{pts(d['ci_low'])}, {pts(d['ci_high'])}]"


def seeds_cell(s):
    if not s:
        return "–", "–"
    accs = ", ".join(pct(a) for a in s.get("accuracies") or [])
    mean, std = s.get("mean"), s.get("std")
    ms = f"{pct(mean)} ± {pct(std)}" if mean is not None and std is not None else pct(mean)
    return ms, accs


def events(path):
    out = []
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                fail(f"{path}: a line is not JSON: {line[:80]!r}")
    return out


def timeline(evs):
    """(first event ms, [(phase, start ms)], end ms, [(version, ms, mean_reward, entropy)])."""
    if not evs:
        return None
    t0 = evs[0]["at_unix_ms"]
    phases, updates = [], []
    end = evs[-1]["at_unix_ms"]
    for e in evs:
        if e.get("type") == "phase_changed":
            phases.append((e["phase"], e["at_unix_ms"]))
        elif e.get("type") == "policy_updated":
            updates.append((e["version"], e["at_unix_ms"], e.get("mean_reward"), e.get("entropy")))
        elif e.get("type") == "state_changed" and e.get("state") in ("succeeded", "failed", "cancelled"):
            end = e["at_unix_ms"]
    return t0, phases, end, updates


def sparkline(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    span = hi - lo or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((v - lo) / span * (len(SPARK) - 1) + 0.5))] for v in vals)


def buckets(points, n):
    """Splits points into at most n consecutive buckets of (almost) equal size."""
    if not points:
        return []
    n = min(n, len(points))
    size = len(points) / n
    return [points[int(i * size):int((i + 1) * size)] for i in range(n)]


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def paper_output(run_dir, cell):
    """The paper's released output for `cell` in the job's space: (changed edges, summary)."""
    path = os.path.join(run_dir, "paper", f"{cell}.diff")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        lines = [l.rstrip() for l in f if l.strip()]
    if not lines:
        return None
    return lines[:-1], lines[-1]


VERDICT_WORDS = {"improved": "improved", "no_difference": "no difference", "worse": "worse"}


def render(run_dir):
    meta = load(os.path.join(run_dir, "meta.json"))
    jobs = []
    for j in meta["jobs"]:
        r = load(os.path.join(run_dir, j["result_file"]))
        evs = events(os.path.join(run_dir, j["events_file"]))
        jobs.append((j, r, evs))

    out = []
    w = out.append
    m = meta["machine"]
    w("# Results: NAT with the supernet reward on Fashion-MNIST, judged by an independent final evaluation")
    w("")
    w("Generated by `make results` (`scripts/results.sh`, rendered by `scripts/results_table.py table`); "
      "do not edit by hand — rerun the command. Every number below comes from real trainings by real "
      "`nat-worker` processes leased through `nat-coordinator`, read back from the jobs' results "
      "(`natctl result JOB -o json`) and event streams (`natctl -o json watch JOB`).")
    w("")
    w(f"- **Date**: {meta['started_utc']} → {meta['finished_utc']} (UTC)")
    dirty = " (with uncommitted changes)" if meta["dirty"] else ""
    w(f"- **Commit**: `{meta['commit']}`{dirty}")
    w(f"- **Command**: `{meta['command']}`")
    if "NAT_RESULTS_BIN=" in meta["command"]:
        w("  (`NAT_RESULTS_BIN`: the three release binaries were built beforehand from a clean `git archive` "
          "of the commit above, because the working tree held other engineers' unfinished edits at the "
          "time; without it `make results` runs `make build` first.)")
    w(f"- **Store**: {meta['backend_description']}; {meta['workers']} workers, "
      f"{meta['threads_per_worker']} libtorch thread(s) each")
    w(f"- **Machine**: {m['nproc']} cores ({m['cpu_model']}), {m['mem_gib']} GiB RAM, {m['kernel']}; "
      f"load average {m['load_start']} at the start, {m['load_end']} at the end")
    ws = meta["wall_seconds"]
    per_job = "; ".join(f"{j['label']} job done after {duration(j['wall_seconds'])}" for j, _, _ in jobs)
    w(f"- **Wall time**: {duration(ws['total'])} in all — build and data {duration(ws['setup'])}, "
      f"both optimize jobs (running side by side on the same workers) {duration(ws['jobs'])} ({per_job})")
    w("")

    # ---- final evaluation ----
    total_inputs = 0
    counts = {"improved": 0, "no_difference": 0, "worse": 0}
    control_counts = {"improved": 0, "no_difference": 0, "worse": 0}
    beats_control = {"above": 0, "below": 0, "neither": 0}
    rows_by_input = []
    for j, r, _ in jobs:
        outcomes = field(r, ["optimize"], j["result_file"])
        if len(outcomes) != len(j["cells"]):
            fail(f"{j['result_file']}: {len(outcomes)} outcomes for {len(j['cells'])} inputs")
        for cell, o in zip(j["cells"], outcomes):
            rows_by_input.append((j, cell, o))
    seeds = None
    w("## Final evaluation")
    w("")
    for j, cell, o in rows_by_input:
        fe = o.get("final")
        if fe and fe.get("seeds"):
            seeds = fe["seeds"]
            break
    seed_text = ", ".join(str(s) for s in seeds) if seeds else "–"
    w(f"Top-1 accuracy (%) on the Fashion-MNIST test split, each architecture trained from scratch with the "
      f"final budget on the paired seeds {seed_text} (no learning or derive step used them). "
      "\"vs original\" is the mean of the per-seed differences with its 95 % paired-t interval, in points. "
      "The verdict is *improved* when that interval lies above 0 and the candidate costs no more than the "
      "original, *worse* when it lies below 0, else *no difference*.")
    w("")
    w("| input | policy | architecture | top-1 % (mean ± std) | per seed | params | multiply-adds | vs original (points, 95 % CI) | verdict |")
    w("|---|---|---|---|---|---|---|---|---|")
    for j, cell, o in rows_by_input:
        total_inputs += 1
        fe = o.get("final") or {}
        space = j["space"].upper() if j["space"] == "nat" else "NAT++"
        name = CELL_LABELS.get(cell, cell)
        orig = fe.get("original")
        best = fe.get("best")
        ms, accs = seeds_cell(orig)
        if orig:
            w(f"| {name} | {space} | original | {ms} | {accs} | {orig['params']:,} | {orig['madds']:,} | | |")
        else:
            w(f"| {name} | {space} | original | – | – | – | – | | |")
        ms, accs = seeds_cell(best)
        verdict = o.get("verdict")
        if verdict in counts:
            counts[verdict] += 1
        if best:
            w(f"| {name} | {space} | NAT pick | {ms} | {accs} | {best['params']:,} | {best['madds']:,} | "
              f"{interval(fe.get('paired_difference'))} | **{VERDICT_WORDS.get(verdict, verdict or '–')}** |")
        c = o.get("control")
        if c:
            cv = c.get("verdict")
            if cv in control_counts:
                control_counts[cv] += 1
            pvc = c.get("policy_vs_control") or {}
            if pvc.get("ci_low") is not None and pvc["ci_low"] > 0:
                beats_control["above"] += 1
            elif pvc.get("ci_high") is not None and pvc["ci_high"] < 0:
                beats_control["below"] += 1
            else:
                beats_control["neither"] += 1
            cf = c.get("final")
            ms, accs = seeds_cell(cf)
            if cf:
                w(f"| {name} | {space} | random control pick | {ms} | {accs} | {cf['params']:,} | {cf['madds']:,} | "
                  f"{interval(c.get('vs_original'))} | {VERDICT_WORDS.get(cv, cv or '–')} |")
    w("")
    w("Params and multiply-adds are those the worker measured for the network it trained. The *NAT pick* "
      "is what the job's derive step chose from the policy's samples; the *random control pick* is what "
      "the same derive chose from uniform samples of the same space (same count, same supernet screening, "
      "same top-k trained from scratch), so the difference between the two is what the learned policy "
      "added over selection alone.")
    w("")

    # ---- verdicts ----
    w("## Verdicts and recommendations")
    w("")
    for j, cell, o in rows_by_input:
        name = CELL_LABELS.get(cell, cell)
        rec = o.get("recommended") or {}
        verdict = VERDICT_WORDS.get(o.get("verdict"), o.get("verdict") or "–")
        line = f"- **{name}** ({'NAT' if j['space'] == 'nat' else 'NAT++'}): {verdict}. "
        if rec:
            reason = (rec.get("reason") or "").rstrip(".")
            line += f"The job {reason[0].lower() + reason[1:] if reason else 'recommends the ' + str(rec.get('from'))}."
        c = o.get("control")
        if c:
            line += f" Policy's pick − control's pick: {interval(c.get('policy_vs_control'))} points."
        da = o.get("derive_accuracy")
        if da is not None:
            line += f" The NAT pick's derive accuracy (the selection measurement, validation split): {pct(da)} %."
        w(line)
        changed = o.get("changed_edges") or []
        if changed:
            w(f"  - NAT pick, {len(changed)} edge(s) changed: " + "; ".join(f"`{e}`" for e in changed))
        else:
            w("  - NAT pick: the original itself (no edge changed).")
        if c and c.get("genotype"):
            w(f"  - Random control pick: `{c['genotype']}`")
        paper = paper_output(run_dir, cell)
        if paper:
            w(f"  - For comparison, the paper's released {'NAT' if j['space'] == 'nat' else 'NAT++'} output "
              f"for this input ({paper[1]}): " + "; ".join(f"`{e}`" for e in paper[0]))
    w("")

    # ---- what the numbers say ----
    w("## What the numbers say")
    w("")
    w(f"Of {total_inputs} inputs, the NAT pick **improved** on the original in {counts['improved']}, "
      f"made **no difference** in {counts['no_difference']} and was **worse** in {counts['worse']}. "
      f"The random control improved in {control_counts['improved']}, no difference in "
      f"{control_counts['no_difference']}, worse in {control_counts['worse']}. The policy's pick beat the "
      f"control's with a 95 % interval above 0 in {beats_control['above']} input(s), lost with one below 0 in "
      f"{beats_control['below']}, and was indistinguishable in {beats_control['neither']}.")
    w("")
    for j, cell, o in rows_by_input:
        name = CELL_LABELS.get(cell, cell)
        fe = o.get("final") or {}
        orig, best = fe.get("original"), fe.get("best")
        if not orig or not best:
            w(f"- **{name}**: no final evaluation (the job did not finish it).")
            continue
        madds = best["madds"] / orig["madds"] if orig["madds"] else None
        params = best["params"] / orig["params"] if orig["params"] else None
        d = fe.get("paired_difference") or {}
        text = (f"- **{name}**: NAT pick {pct(best['mean'])} % vs original {pct(orig['mean'])} % "
                f"({interval(d)} points) at {madds * 100:.0f} % of the original's multiply-adds and "
                f"{params * 100:.0f} % of its parameters")
        c = o.get("control")
        if c and c.get("final"):
            text += f"; random control pick {pct(c['final']['mean'])} % ({interval(c.get('vs_original'))} vs original)"
        w(text + ".")
    w("")
    parametric = ("conv", "sep_conv", "dil_conv")
    lost_by_removal = []
    for j, cell, o in rows_by_input:
        moves = [e.split(": ", 1)[-1] for e in (o.get("changed_edges") or [])]
        removed = [m for m in moves if m.split(" => ")[0].startswith(parametric)
                   and not m.split(" => ")[-1].startswith(parametric)]
        added_paths = [m for m in moves if m.startswith("null => ") and not m.endswith("null")]
        if not moves:
            continue
        w(f"- {CELL_LABELS.get(cell, cell)}: of the NAT pick's {len(moves)} moves, {len(added_paths)} turn a "
          f"null edge into an op (null → skip adds a path at no cost) and {len(removed)} replace a "
          f"parametric op (a convolution) with a parameter-free one or null.")
        if removed and o.get("verdict") == "worse":
            lost_by_removal.append(CELL_LABELS.get(cell, cell))
    w("")
    rising = []
    for j, r, _ in jobs:
        curve = (r.get("learning") or {}).get("curve") or []
        if len(curve) >= 4:
            first = mean([p.get("mean_reward") for p in curve[: max(1, len(curve) // 10)]])
            last = mean([p.get("mean_reward") for p in curve[-max(1, len(curve) // 10):]])
            if first is not None and last is not None and last > first:
                rising.append(f"{'NAT' if j['space'] == 'nat' else 'NAT++'} ({pts(first)} → {pts(last)} points)")
    if rising:
        w("The policies did learn what the supernet rewards: the mean reward of the first and last tenth of "
          "the updates rose for " + ", ".join(rising) + " (the learning tables below show how each input's argmax probability moved). What the supernet rewards is not the same as "
          "what trains well from scratch, though. A supernet whose shared weights are trained for minutes "
          "favours parameter-free edges: a skip connection is useful from the first step, while a convolution "
          "shared by every sampled architecture is still half-trained, so α with fewer convolutions often "
          "scores higher on the supernet's minibatch. This is the bias towards skip connections reported for "
          "weight-sharing search (e.g. DARTS' collapse onto skip connections)."
          + (f" Here it shows in {', '.join(lost_by_removal)}: the NAT pick removed convolutions, the supernet "
             "ranked it first, and trained from scratch it is clearly worse — the job's verdict caught that and "
             "recommends the original." if lost_by_removal else ""))
        w("")
    w("How to read this: the final budget is tiny next to the paper's (600 epochs of CIFAR-10 at C = 36, "
      "L = 20), so the table measures how well cells learn in a short training, not how well they end up; "
      "an interval that holds 0 means the difference is not distinguishable from seed noise at this budget "
      "and seed count. The policies learned from the supernet rewards below (the paper takes ~47,000 policy "
      "steps; these jobs take a few thousand rewards); the supernet's accuracies are those of shared weights "
      "trained for minutes, so a reward acc(α) − acc(β) on one minibatch is noisy. Read the learning curves "
      "and the policy-vs-control column together: a policy that learned something shows a rising reward "
      "and a pick that beats the control's; selection alone (derive) is what the control measures.")
    w("")

    # ---- learning ----
    w("## Learning")
    w("")
    w("| policy | inputs | rewards | policy updates | supernet version | rounds | shards per round | workers seen | learning time | policy updates / hour | rewards / hour |")
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    curves = []
    for j, r, evs in jobs:
        l = r.get("learning") or {}
        sn = l.get("supernet") or {}
        tl = timeline(evs)
        learn_s = rate_u = rate_r = None
        if tl:
            t0, phases, end, updates = tl
            if len(updates) >= 2:
                span = (updates[-1][1] - updates[0][1]) / 1000.0
                if span > 0:
                    rate_u = (len(updates) - 1) / span * 3600
                    per = (l.get("rewards") or 0) / max(1, len(updates))
                    rate_r = rate_u * per
            start = next((t for p, t in phases if p == "learn"), t0)
            stop = next((t for p, t in phases if p != "learn" and t > start), None)
            if stop:
                learn_s = (stop - start) / 1000.0
        policy = "NAT" if j["space"] == "nat" else "NAT++"
        inputs = ", ".join(CELL_LABELS.get(c, c) for c in j["cells"])
        w(f"| {policy} | {inputs} | {l.get('rewards', '–'):,} | {l.get('policy_versions', '–')} | "
          f"{sn.get('version', '–')} | {sn.get('rounds', '–')} | {sn.get('shards_per_round', '–')} | "
          f"{sn.get('workers_seen', '–')} | {duration(learn_s) if learn_s else '–'} | "
          f"{f'{rate_u:,.0f}' if rate_u else '–'} | {f'{rate_r:,.0f}' if rate_r else '–'} |")
        curves.append((policy, inputs, l, tl))
    w("")
    w("Rates are taken between the first and the last policy update (the warm-up, derive and the final "
      "evaluation are left out); both jobs shared the same workers the whole time, so each rate is that "
      "job's share of the fleet.")
    w("")
    for (policy, inputs, l, tl), (j, _, _) in zip(curves, jobs):
        curve = l.get("curve") or []
        w(f"### {policy} on {inputs}: learning curve")
        w("")
        if not curve:
            w("No policy update was recorded.")
            w("")
            continue
        ma = [p.get("reward_moving_average") for p in curve]
        w(f"Mean reward per update (moving average, weight 0.1), {len(curve)} updates: `{sparkline([mean(b) for b in buckets(ma, 60)])}`")
        w("")
        w("| updates | mean reward | moving average at the end | mean entropy |")
        w("|---|---|---|---|")
        for b in buckets(curve, 10):
            entropy = mean([p.get("entropy") for p in b])
            entropy_text = "–" if entropy is None else f"{entropy:.3f}"
            w(f"| {b[0]['version']}–{b[-1]['version']} | {pts(mean([p.get('mean_reward') for p in b]))} | "
              f"{pts(b[-1].get('reward_moving_average'))} | {entropy_text} |")
        w("")
        w("Rewards are acc(α) − acc(β) on one validation minibatch of the supernet, in points. Per input, "
          "the policy's probability of leaving it unchanged and of its most likely transformation, at the "
          "version the job started from and at its last:")
        w("")
        w("| input | p(identity) first → last | p(argmax) first → last | argmax at the last version |")
        w("|---|---|---|---|")
        for i in l.get("inputs") or []:
            idx = i.get("input_index", 0)
            idx = CELL_LABELS.get(j["cells"][idx], j["cells"][idx]) if idx < len(j["cells"]) else idx
            def prob(x):
                return "–" if x is None else f"{x:.3g}"
            w(f"| {idx} | {prob(i.get('identity_probability_first'))} → {prob(i.get('identity_probability_last'))} | "
              f"{prob(i.get('argmax_probability_first'))} → {prob(i.get('argmax_probability_last'))} | "
              f"`{i.get('argmax_last') or '–'}` |")
        w("")

    # ---- timeline ----
    w("## Timeline")
    w("")
    w("| job | phase | started after | lasted |")
    w("|---|---|---|---|")
    for j, r, evs in jobs:
        tl = timeline(evs)
        if not tl:
            w(f"| {j['label']} | (no events recorded) | | |")
            continue
        t0, phases, end, _ = tl
        marks = phases + [("done", end)]
        for (p, t), (_, t_next) in zip(marks, marks[1:]):
            w(f"| {j['label']} ({j['job'][:8]}) | {p} | {duration((t - t0) / 1000)} | {duration((t_next - t) / 1000)} |")
    w("")

    # ---- settings ----
    w("## Settings (identical for both jobs)")
    w("")
    w("The job file of each policy, as submitted (`natctl submit -f`; inputs and space differ):")
    w("")
    for j, _, _ in jobs:
        label = j["label"]
        w(f"<details><summary>{label}.yaml</summary>")
        w("")
        w("```yaml")
        with open(os.path.join(run_dir, f"jobs/{label}.yaml")) as f:
            w(f.read().rstrip())
        w("```")
        w("")
        w("</details>")
        w("")
    w("- `budget` is the derive budget: the top-k candidates of the supernet screening (policy and "
      "control) are trained from scratch with it and measured on a held-out 10 % of the training split.")
    w("- `optimize.final_budget` is the final evaluation's: measured on the test split "
      "(`validation_fraction: 0`), `max_wall_seconds: 0` so a loaded machine slows a training down but "
      "never shortens it.")
    w("- `optimize.supernet` is the supernet the rewards are measured on; `shards: auto` gives each "
      "learning round one shard per free worker slot (both jobs competed for the same workers).")
    w("")
    w("Re-run with the same command; every knob is an environment variable listed at the top of "
      "`scripts/results.sh` (e.g. `NAT_RESULTS_REWARDS`, `NAT_RESULTS_SEEDS`, `NAT_RESULTS_EPOCHS`).")
    return "\n".join(out) + "\n"


def main(argv):
    if len(argv) == 3 and argv[1] == "meta":
        write_meta(argv[2])
    elif len(argv) == 3 and argv[1] == "table":
        sys.stdout.write(render(argv[2]))
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
