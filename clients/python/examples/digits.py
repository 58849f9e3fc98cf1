#!/usr/bin/env python3
"""Evaluate architectures on the digits dataset with a small budget and print their accuracy.

    pip install ./clients/python          # add [progress] for a tqdm bar
    python clients/python/examples/digits.py --coordinator 127.0.0.1:50051

Needs a running coordinator and at least one worker with the digits dataset. Prints
``job_id=ID`` when the job is submitted, follows it with the progress display, then one line per
architecture. Exits 0 only if the job succeeded (1 if it did not, 2 on a client or gRPC error).
"""

from __future__ import annotations

import argparse
import os
import sys

from nat_client import Client, NatError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--coordinator",
        default=os.environ.get("NAT_COORDINATOR", "127.0.0.1:50051"),
        help="host:port or http://host:port (default: $NAT_COORDINATOR, else 127.0.0.1:50051)",
    )
    parser.add_argument(
        "--architectures",
        nargs="+",
        default=["darts-v2", "resnet-block"],
        help="preset names, genotype JSON or DARTS strings (default: darts-v2 resnet-block)",
    )
    parser.add_argument("--budget", default="smoke", help="budget preset (default: smoke)")
    parser.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-progress", action="store_true", help="no progress display")
    args = parser.parse_args()

    try:
        with Client(args.coordinator) as nat:
            job = nat.submit_evaluate(
                args.architectures,
                "digits",
                budget=args.budget,
                epochs=args.epochs,
                seed=args.seed,
                name="python client example",
            )
            print(f"job_id={job.job_id}", flush=True)
            finished = nat.wait(job.job_id, progress=not args.no_progress)
            print(f"job {finished.job_id}: {finished.state}")
            if finished.state != "succeeded":
                print(f"error: {finished.error or 'no reason given'}", file=sys.stderr)
                return 1
            for arch in nat.result(job.job_id).architectures:
                if arch.accuracy is None:
                    print(f"  [{arch.index}] {arch.state}: {arch.error}", file=sys.stderr)
                    return 1
                print(
                    f"  [{arch.index}] accuracy {arch.accuracy:.4f}  "
                    f"params {arch.params}  {arch.genotype_darts[:60]}…"
                )
    except NatError as error:
        print(f"digits example: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
