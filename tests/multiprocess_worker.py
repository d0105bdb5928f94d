"""One process of a multi-process pipeline run on this machine (loopback only).

The test that starts it sets XLA_FLAGS to give each process its own simulated CPU
devices, then starts one copy per process id:

  python tests/multiprocess_worker.py --port=PORT --process_id=0 --num_processes=2 \
      --workdir=DIR --output=OUT.json --overrides='{"train.num_steps": 8}'

Each process joins the coordinator at 127.0.0.1:PORT, runs fsl_jax.pipeline.run on
the small job of train_jobs.small_config, and writes what pipeline.run returned, with
its process index and device counts, to --output. With --stop_after=N the processes
first train N steps and stop, as if killed, then run again in the same workdir and
resume from the periodic checkpoint that all of them saved.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from train_jobs import small_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="Coordinator port on 127.0.0.1.")
    parser.add_argument("--process_id", type=int, required=True)
    parser.add_argument("--num_processes", type=int, required=True)
    parser.add_argument("--workdir", required=True, help="Workdir shared by all processes.")
    parser.add_argument("--output", required=True, help="JSON file this process writes.")
    parser.add_argument("--overrides", default="{}", help="JSON dict of dotted config keys.")
    parser.add_argument(
        "--stop_after", type=int, default=0, help="Stop after this many steps, then resume."
    )
    args = parser.parse_args()

    overrides = json.loads(args.overrides)
    overrides.update(
        {
            "distributed.coordinator_address": f"127.0.0.1:{args.port}",
            "distributed.num_processes": args.num_processes,
            "distributed.process_id": args.process_id,
            "distributed.cpu_collectives": "gloo",
        }
    )
    config = small_config(overrides)

    import jax

    from fsl_jax import pipeline

    if args.stop_after:
        stopping = small_config({**overrides, "train.stop_after": args.stop_after})
        stopped = pipeline.run(stopping, args.workdir)
        if stopped is not None:
            raise SystemExit(
                f"pipeline.run returned results although train.stop_after={args.stop_after}."
            )
    results = pipeline.run(config, args.workdir)
    record = {
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "local_device_count": jax.local_device_count(),
        "device_count": jax.device_count(),
        "results": results,
    }
    with open(args.output, "w", encoding="utf-8") as handle:
        json.dump(record, handle, default=str)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
