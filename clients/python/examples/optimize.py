#!/usr/bin/env python3
"""Run a small NAT optimize job on the digits and print the verdict per input architecture.

    python clients/python/examples/optimize.py --coordinator 127.0.0.1:50051

A proxy-reward job with few rounds: minutes on a couple of CPU workers, not a result worth
keeping (use the `small` budget and more iterations for that). Exits 0 only if the job succeeded.
"""

from __future__ import annotations

import argparse
import os
import sys

from nat_client import Client, NatError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--coordinator", default=os.environ.get("NAT_COORDINATOR", "127.0.0.1:50051")
    )
    parser.add_argument("--architectures", nargs="+", default=["resnet-block"])
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--samples", type=int, default=2, help="rewards per policy update")
    parser.add_argument("--final-seeds", type=int, default=2)
    parser.add_argument("--control", choices=["none", "random"], default="none")
    args = parser.parse_args()

    try:
        with Client(args.coordinator) as nat:
            job = nat.submit_optimize(
                args.architectures,
                "digits",
                budget="smoke",
                seed=1,
                name="python client optimize example",
                reward="proxy",
                iterations=args.iterations,
                samples_per_iteration=args.samples,
                derive_samples=2,
                final_budget="smoke",
                final_seeds=args.final_seeds,
                max_cost_ratio=1.5,
                control=args.control,
            )
            print(f"job_id={job.job_id}", flush=True)
            finished = nat.wait(job.job_id)
            print(f"job {finished.job_id}: {finished.state}")
            if finished.state != "succeeded":
                print(f"error: {finished.error or 'no reason given'}", file=sys.stderr)
                return 1
            for index, outcome in enumerate(nat.result(job.job_id).optimize):
                final = outcome.final
                print(
                    f"  input {index}: {outcome.verdict}  "
                    f"original {final.original.mean:.4f}  best {final.best.mean:.4f}  "
                    f"use the {getattr(outcome.recommended, 'from')}"
                )
                for edge in outcome.changed_edges:
                    print(f"    {edge}")
    except NatError as error:
        print(f"optimize example: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
