"""Wall time of the SST-2 16-shot job: fsl_jax run.py against the PyTorch and SetFit peers.

Each repetition runs, one after another and each in a fresh process:

  fsl_jax cold   python run.py --config=configs/sst2_finetune.py over --seeds (13), with a
                 fresh workdir and an empty persistent XLA compilation cache
  fsl_jax warm   the same command with a fresh workdir and the cache the cold run
                 filled, as a rerun or a later seed of the same job finds it
  torch          benchmarks/peer_hf_finetune.py over the same seeds, once per --peer_threads
                 value: AutoModelForSequenceClassification, AdamW lr 2e-5, batch 8,
                 30 epochs, then dev and test (872 rows) evaluation
  setfit         benchmarks/peer_setfit.py over the same seeds, once per --setfit_threads
                 value: SetFit 1.2.0 defaults (the more accurate peer)

Each --variant NAME="OVERRIDES" adds a cold and a warm run of the fsl_jax job with
those config overrides (and a compilation cache of its own), e.g.
--variant unpadded="--config.contrastive.pack=False".

Wall time runs from process start to exit: imports, data, model load, compilation,
training, evaluation and writing results. fsl_jax also scores dev and writes
orbax checkpoints, which the peers do not do. The order of the runs is reversed on
every other repetition.

    python benchmarks/bench_end_to_end.py --output benchmarks/results/bench_end_to_end.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_common
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
PEER_SCRIPT = REPO_ROOT / "benchmarks" / "peer_hf_finetune.py"
SETFIT_SCRIPT = REPO_ROOT / "benchmarks" / "peer_setfit.py"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[13],
        help="SST-2 16-shot split seeds; every run covers all of them in one job, as run.py does.",
    )
    parser.add_argument("--repeats", type=int, default=2, help="Repetitions of every run.")
    parser.add_argument(
        "--peer_threads",
        type=int,
        nargs="+",
        default=[2, 1],
        help="torch.set_num_threads values of the PyTorch peer, one run each.",
    )
    parser.add_argument(
        "--setfit_threads",
        type=int,
        nargs="*",
        default=[2],
        help="torch.set_num_threads values of the SetFit peer, one run each; none skips it.",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar='NAME="OVERRIDES"',
        help="Also time the fsl_jax job with these space-separated config overrides.",
    )
    bench_common.add_output_argument(parser, "bench_end_to_end.json")
    return parser.parse_args(argv)


def run_timed(command: list[str], log_path: Path) -> float:
    """Run command from the repository root and return its wall seconds.

    Raises:
      RuntimeError: the command failed; the message ends with its log.
    """
    started = time.perf_counter()
    with log_path.open("w", encoding="utf-8") as log:
        completed = subprocess.run(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        tail = log_path.read_text(encoding="utf-8")[-3000:]
        raise RuntimeError(
            f"{' '.join(command)} failed with code {completed.returncode}; end of {log_path}:\n"
            f"{tail}"
        )
    return seconds


def parse_variants(values: list[str]) -> dict[str, list[str]]:
    """Return {name: overrides} from --variant NAME="OVERRIDES" values."""
    variants = {}
    for value in values:
        name, separator, overrides = value.partition("=")
        if not separator or not name or not overrides.split():
            raise ValueError(
                f'Invalid --variant {value!r}; use the form NAME="--config.key=value ...", e.g. '
                'unpadded="--config.contrastive.pack=False".'
            )
        variants[name] = overrides.split()
    return variants


def fsl_jax_run(
    seeds: list[int],
    workdir: Path,
    cache_dir: Path,
    log_path: Path,
    overrides: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run the fsl_jax job over seeds; return its wall time and mean test accuracy."""
    command = [
        sys.executable,
        "run.py",
        "--config=configs/sst2_finetune.py",
        f"--workdir={workdir}",
        f"--config.seeds=({','.join(str(seed) for seed in seeds)},)",
        f"--config.compilation_cache_dir={cache_dir}",
        *overrides,
    ]
    seconds = run_timed(command, log_path)
    results = [
        json.loads((workdir / "seeds" / f"seed_{seed}.json").read_text())["teacher"]
        for seed in seeds
    ]
    return {
        "wall_s": seconds,
        "test_accuracy": 100 * float(np.mean([result["test_accuracy"] for result in results])),
        "seed_wall_s": sum(result["wall_seconds"] for result in results),
    }


def peer_run(
    seeds: list[int], threads: int, output: Path, log_path: Path, script: Path = PEER_SCRIPT
) -> dict[str, Any]:
    """Run a peer script over seeds; return its wall time and mean test accuracy."""
    command = [
        sys.executable,
        str(script),
        "--task",
        "sst2",
        "--seeds",
        *(str(seed) for seed in seeds),
        "--threads",
        str(threads),
        "--output",
        str(output),
    ]
    seconds = run_timed(command, log_path)
    report = json.loads(output.read_text())
    per_seed = [report["per_seed"][str(seed)] for seed in seeds]
    return {
        "wall_s": seconds,
        "test_accuracy": float(np.mean([result["test_accuracy"] for result in per_seed])),
        "seed_wall_s": sum(result["wall_s"] for result in per_seed),
    }


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    variants = parse_variants(args.variant)
    for script in (PEER_SCRIPT, SETFIT_SCRIPT):
        if not script.is_file():
            raise FileNotFoundError(f"Peer script {script} not found; the benchmark needs it.")

    # (run name, script, threads) of every peer run in a repetition.
    peers = [(f"torch_{threads}threads", PEER_SCRIPT, threads) for threads in args.peer_threads]
    peers += [
        (f"setfit_{threads}threads", SETFIT_SCRIPT, threads) for threads in args.setfit_threads
    ]
    fsl_names = ["fsl_jax_cold", "fsl_jax_warm"]
    for name in variants:
        fsl_names += [f"fsl_jax_{name}_cold", f"fsl_jax_{name}_warm"]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in fsl_names}
    for name, _, _ in peers:
        runs[name] = []

    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        for repetition in range(args.repeats):
            folder = scratch / f"repetition_{repetition}"
            folder.mkdir()
            cache_dir = folder / "xla_cache"

            def cold(folder=folder, cache_dir=cache_dir):
                return fsl_jax_run(args.seeds, folder / "cold", cache_dir, folder / "cold.log")

            def warm(folder=folder, cache_dir=cache_dir):
                return fsl_jax_run(args.seeds, folder / "warm", cache_dir, folder / "warm.log")

            jobs = [("fsl_jax_cold", cold)]
            for name, script, threads in peers:
                jobs.append(
                    (
                        name,
                        lambda name=name, script=script, threads=threads, folder=folder: peer_run(
                            args.seeds,
                            threads,
                            folder / f"{name}.json",
                            folder / f"{name}.log",
                            script,
                        ),
                    )
                )
            jobs.append(("fsl_jax_warm", warm))
            if repetition % 2:
                # The warm run needs the cache of the cold run, so only the peers move.
                jobs = [jobs[0], *jobs[1:-1][::-1], jobs[-1]]
            for name, overrides in variants.items():
                for kind in ("cold", "warm"):
                    jobs.append(
                        (
                            f"fsl_jax_{name}_{kind}",
                            lambda name=name, kind=kind, overrides=overrides, folder=folder: (
                                fsl_jax_run(
                                    args.seeds,
                                    folder / f"{name}_{kind}",
                                    folder / f"xla_cache_{name}",
                                    folder / f"{name}_{kind}.log",
                                    tuple(overrides),
                                )
                            ),
                        )
                    )
            for name, job in jobs:
                result = job()
                runs[name].append(result)
                print(
                    f"repetition {repetition + 1}/{args.repeats} {name}: {result['wall_s']:.1f} s, "
                    f"test accuracy {result['test_accuracy']:.2f}%",
                    flush=True,
                )

    summaries = {
        name: bench_common.summary([result["wall_s"] for result in results])
        for name, results in runs.items()
    }
    peer_names = [name for name, _, _ in peers]
    speedups = {}
    for fsl_name in fsl_names:
        for peer_name in peer_names:
            speedups[f"{fsl_name}_vs_{peer_name}"] = bench_common.ratio_summary(
                [result["wall_s"] for result in runs[peer_name]],
                [result["wall_s"] for result in runs[fsl_name]],
            )
    fastest_peer = min(peer_names, key=lambda name: summaries[name]["median"])
    report: dict[str, Any] = {
        "benchmark": "end_to_end",
        "task": "sst2",
        "k_shot": 16,
        "seeds": args.seeds,
        "runs": runs,
        "wall_s": summaries,
        "speedup_peer_wall_over_fsl_jax_wall": speedups,
        "fastest_peer": fastest_peer,
        "fsl_jax_config": "configs/sst2_finetune.py",
        "fsl_jax_variants": variants,
        "peers": {name: str(script.relative_to(REPO_ROOT)) for name, script, _ in peers},
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    report.update(bench_common.run_description())

    print(f"\n== SST-2 16-shot, seeds {args.seeds}, wall time per run ==")
    for name, values in summaries.items():
        print(f"{name:18s} median {values['median']:.1f} s (spread {values['spread']:.0%})")
    for name, values in speedups.items():
        print(f"{name}: {values['median']:.2f}x (range {values['min']:.2f}-{values['max']:.2f})")
    bench_common.write_report(args.output, report)


if __name__ == "__main__":
    main(sys.argv[1:])
