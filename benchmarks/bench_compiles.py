"""XLA compilations of fsl_jax: none after warm-up for a fixed set of length buckets.

Two measurements, both counting the backend compilations that jax.monitoring
reports (with the name of the jitted function) and the persistent-cache hits:

  steady state  The SST-2 16-shot job's train and eval steps, built once. Warm-up
                runs one train and one eval batch of every length bucket. After
                it, several epochs of the real train split, dev evaluations and a
                test evaluation (872 rows) should compile nothing.
  whole job     fsl_jax.pipeline.run on SST-2 seed 13 (what run.py runs), with an
                empty persistent compilation cache and then again with the cache
                warm, listing every compilation of the run by function.

    python benchmarks/bench_compiles.py --output benchmarks/results/bench_compiles.json
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_common

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


class CompileCounter:
    """Record XLA compilations, traces and persistent-cache hits through jax.monitoring."""

    def __init__(self):
        import jax

        self.compiles: list[dict[str, Any]] = []
        self.traces = 0
        self._pending_hit = False
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        jax.monitoring.register_event_listener(self._on_event)

    def _on_event(self, event: str, **kwargs) -> None:
        if event == CACHE_HIT_EVENT:
            self._pending_hit = True

    def _on_duration(self, event: str, duration: float, **kwargs) -> None:
        if event == TRACE_EVENT:
            self.traces += 1
        elif event == BACKEND_COMPILE_EVENT:
            # A persistent-cache hit is reported just before the compile event it serves.
            self.compiles.append(
                {
                    "function": kwargs.get("fun_name", "?"),
                    "seconds": duration,
                    "persistent_cache_hit": self._pending_hit,
                }
            )
            self._pending_hit = False

    def mark(self) -> tuple[int, int]:
        return len(self.compiles), self.traces

    def since(self, mark: tuple[int, int]) -> dict[str, Any]:
        """Summarise the compilations recorded after mark, grouped by jitted function."""
        compiles = self.compiles[mark[0] :]
        by_function: dict[str, dict[str, float]] = collections.defaultdict(
            lambda: {"compiles": 0, "persistent_cache_hits": 0, "seconds": 0.0}
        )
        for record in compiles:
            entry = by_function[record["function"]]
            entry["compiles"] += 1
            entry["persistent_cache_hits"] += int(record["persistent_cache_hit"])
            entry["seconds"] += record["seconds"]
        return {
            "compiles": len(compiles),
            "xla_compiles": sum(not record["persistent_cache_hit"] for record in compiles),
            "persistent_cache_hits": sum(record["persistent_cache_hit"] for record in compiles),
            "compile_seconds": sum(record["seconds"] for record in compiles),
            "traces": self.traces - mark[1],
            "by_function": dict(sorted(by_function.items(), key=lambda item: -item[1]["seconds"])),
        }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=13, help="SST-2 16-shot split seed.")
    parser.add_argument(
        "--buckets",
        type=int,
        nargs="+",
        default=[32, 64, 128],
        help="Length buckets of the steady-state measurement.",
    )
    parser.add_argument("--epochs", type=int, default=5, help="Steady-state train epochs.")
    parser.add_argument(
        "--skip_job", action="store_true", help="Skip the two whole-job runs (about 8 minutes)."
    )
    parser.add_argument(
        "--job_worker",
        nargs=2,
        type=Path,
        metavar=("CACHE_DIR", "WORKDIR"),
        help=argparse.SUPPRESS,
    )
    bench_common.add_output_argument(parser, "bench_compiles.json")
    return parser.parse_args(argv)


def steady_state(counter: CompileCounter, seed: int, buckets: tuple[int, ...], epochs: int):
    """Return the compilations of warm-up and of the training and evaluation after it."""
    import jax
    import numpy as np

    from configs import sst2_finetune
    from fsl_jax import data as data_lib
    from fsl_jax.checkpoints import load_encoder, resolve_checkpoint
    from fsl_jax.train import finetune
    from fsl_jax.train.mesh import make_mesh, to_global_batch
    from fsl_jax.train.optimizer import make_optimizer
    from fsl_jax.train.state import create_train_state
    from fsl_jax.train.steps import make_eval_step, make_train_step

    config = sst2_finetune.get_config()
    config.max_length = max(buckets)
    checkpoint_dir = resolve_checkpoint(config.checkpoint)
    tokenizer = data_lib.Tokenizer.from_pretrained(checkpoint_dir)
    splits, vocab = data_lib.load_task("sst2", seed=seed, k=16)
    encoded = {
        name: data_lib.encode_split(tokenizer, split, config.max_length, vocab)
        for name, split in splits.items()
    }
    mesh = make_mesh()
    encoder_config, encoder_params = load_encoder(checkpoint_dir)
    model = finetune.build_classifier(config.model, encoder_config, len(vocab))
    params = finetune.init_params(model, encoder_params, jax.random.PRNGKey(seed))
    batch_size, eval_batch_size = config.train.batch_size, config.train.eval_batch_size
    steps_per_epoch = data_lib.num_batches(len(encoded["train"]), batch_size)
    optimizer, _ = make_optimizer(
        config.optimizer, params, epochs * steps_per_epoch, encoder_config.num_layers
    )
    state = create_train_state(params, optimizer, seed, mesh)
    train_step = make_train_step(finetune.classification_loss(model), optimizer, state, mesh)
    eval_step = make_eval_step(finetune.eval_apply(model), state.params, mesh)

    setup_mark = counter.mark()
    started = time.perf_counter()
    # Warm-up: one train and one eval batch of each bucket, from rows cut to that length.
    train = encoded["train"]
    for bucket in buckets:
        rows = np.arange(min(batch_size, len(train)))
        warm = data_lib.make_batch(train, rows, batch_size, (bucket,))
        state, _ = train_step(state, to_global_batch(warm, mesh))
        eval_warm = data_lib.make_batch(train, rows, eval_batch_size, (bucket,))
        jax.block_until_ready(eval_step(state.params, to_global_batch(eval_warm, mesh)))
    warm_up = counter.since(setup_mark)
    warm_up["wall_s"] = time.perf_counter() - started

    after_mark = counter.mark()
    started = time.perf_counter()
    settings = finetune.TrainSettings.from_config(config.train, len(train), mesh)
    settings.length_buckets = tuple(buckets)
    # The warm-up covers padded batches of each bucket. Packed evaluation (one shape
    # per split) compiles in the whole-job measurement instead.
    settings.pack_eval = False
    batches_per_bucket: collections.Counter = collections.Counter()
    for epoch in range(epochs):
        for batch in data_lib.batch_iterator(
            train, batch_size, buckets, shuffle=True, seed=seed, epoch=epoch
        ):
            batches_per_bucket[f"train_{batch['input_ids'].shape[1]}"] += 1
            state, metrics = train_step(state, to_global_batch(batch, mesh))
        jax.device_get(metrics)
        finetune.evaluate_split(eval_step, state.params, encoded["dev"], settings, mesh, len(vocab))
    for batch in finetune.eval_batches(encoded["test"], eval_batch_size, tuple(buckets), 1):
        batches_per_bucket[f"test_{batch['input_ids'].shape[1]}"] += 1
    finetune.evaluate_split(eval_step, state.params, encoded["test"], settings, mesh, len(vocab))
    after = counter.since(after_mark)
    after["wall_s"] = time.perf_counter() - started
    return {
        "buckets": list(buckets),
        "epochs": epochs,
        "batches_per_bucket": dict(batches_per_bucket),
        "warm_up": warm_up,
        "after_warm_up": after,
    }


def whole_job(counter: CompileCounter, seed: int, cache_dir: Path, workdir: Path) -> dict:
    """Run the SST-2 fine-tune job for one seed and return its compilations."""
    from configs import sst2_finetune
    from fsl_jax import pipeline

    config = sst2_finetune.get_config()
    config.seeds = (seed,)
    config.compilation_cache_dir = str(cache_dir)
    mark = counter.mark()
    started = time.perf_counter()
    pipeline.run(config, workdir)
    summary = counter.since(mark)
    summary["wall_s"] = time.perf_counter() - started
    return summary


def whole_job_in_new_process(seed: int, cache_dir: Path, workdir: Path) -> dict:
    """Run whole_job in a fresh Python process, as `python run.py` would start."""
    command = [
        sys.executable,
        __file__,
        "--seed",
        str(seed),
        "--job_worker",
        str(cache_dir),
        str(workdir),
    ]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(
            f"Whole-job run failed with code {completed.returncode}:\n{completed.stderr[-3000:]}"
        )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def print_summary(title: str, summary: dict[str, Any]) -> None:
    print(
        f"{title}: {summary['compiles']} compilations ({summary['xla_compiles']} by XLA, "
        f"{summary['persistent_cache_hits']} persistent-cache hits), "
        f"{summary['compile_seconds']:.1f} s compiling, {summary['traces']} traces, "
        f"{summary['wall_s']:.1f} s wall"
    )
    for name, entry in summary["by_function"].items():
        if entry["seconds"] >= 0.5 or summary["compiles"] <= 12:
            print(
                f"    {name}: {entry['compiles']} ({entry['persistent_cache_hits']} cache hits), "
                f"{entry['seconds']:.1f} s"
            )


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    counter = CompileCounter()
    if args.job_worker:
        summary = whole_job(counter, args.seed, *args.job_worker)
        print(json.dumps(summary))
        return
    report: dict[str, Any] = {"benchmark": "compiles", "seed": args.seed}

    report["steady_state"] = steady_state(counter, args.seed, tuple(args.buckets), args.epochs)
    print_summary("steady state, warm-up", report["steady_state"]["warm_up"])
    print_summary("steady state, after warm-up", report["steady_state"]["after_warm_up"])

    if not args.skip_job:
        with tempfile.TemporaryDirectory() as scratch:
            scratch = Path(scratch)
            for key, title, workdir in (
                ("job_cold_cache", "whole job, empty persistent cache", scratch / "cold"),
                ("job_warm_cache", "whole job, warm persistent cache", scratch / "warm"),
            ):
                report[key] = whole_job_in_new_process(args.seed, scratch / "xla_cache", workdir)
                print_summary(title, report[key])

    report.update(bench_common.run_description())
    bench_common.write_report(args.output, report)


if __name__ == "__main__":
    main(sys.argv[1:])
