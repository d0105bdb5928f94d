"""Timing, FLOP counts, machine description and reports shared by the speed benchmarks.

The speed benchmarks (bench_*.py) compare fsl_jax with Hugging Face PyTorch within
one run, interleaving their repetitions so both see the same machine load. Absolute
times on a shared CPU move by tens of percent between runs, so the ratios of
interleaved repetitions are the figures to compare.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

import peer_common  # noqa: F401  (sets the Hugging Face offline variables and sys.path)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
VERSIONED_PACKAGES = ["jax", "jaxlib", "flax", "optax", "torch", "transformers", "numpy"]


# ----------------------------------------------------------------------------
# Machine and run description.
# ----------------------------------------------------------------------------


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine_description() -> dict[str, Any]:
    """Return the CPU, its vector extensions, memory, load average and XLA flags."""
    info = peer_common.machine_info()
    flags = cpu_flags()
    info["avx512_bf16"] = "avx512_bf16" in flags
    info["amx"] = any(flag.startswith("amx") for flag in flags)
    info["load_average_1m_5m_15m"] = [round(value, 2) for value in os.getloadavg()]
    info["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    return info


def run_description() -> dict[str, Any]:
    """Return what a report needs to be reproduced: versions, machine, date and command."""
    return {
        "versions": peer_common.package_versions(VERSIONED_PACKAGES),
        "machine": machine_description(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
    }


def peak_rss_mib() -> float:
    """Return this process's peak resident set size in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def add_output_argument(parser: argparse.ArgumentParser, default_name: str) -> None:
    """Add --output, the path of the JSON report, defaulting to results/default_name."""
    parser.add_argument(
        "--output",
        type=Path,
        default=RESULTS_DIR / default_name,
        help="Path of the JSON report.",
    )


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"Wrote {path}")


# ----------------------------------------------------------------------------
# Timing.
# ----------------------------------------------------------------------------


def time_call(function: Callable[[], Any]) -> float:
    """Return the wall seconds of one call; the function must block until its work is done."""
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def time_call_with_cpu(function: Callable[[], Any]) -> tuple[float, float]:
    """Return (wall seconds, CPU seconds of this process) of one blocking call.

    CPU seconds count the work of all the process's threads and leave out the time
    they wait for a CPU, so on a loaded machine they vary less than wall seconds.
    """
    wall_started, cpu_started = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall_started, time.process_time() - cpu_started


def summary(seconds: list[float]) -> dict[str, float]:
    """Return the median, min and max of repeated timings and their spread.

    spread is (max - min) / median, so 0.2 means the repetitions differ by 20% of
    the median.
    """
    median = statistics.median(seconds)
    return {
        "median": median,
        "min": min(seconds),
        "max": max(seconds),
        "spread": (max(seconds) - min(seconds)) / median if median else float("nan"),
        "repeats": len(seconds),
    }


def ratio_summary(numerators: list[float], denominators: list[float]) -> dict[str, float]:
    """Summarise the ratios of paired timings taken in the same repetition."""
    return summary([top / bottom for top, bottom in zip(numerators, denominators)])


def interleave(
    timers: dict[str, Callable[[], float]], repeats: int
) -> dict[str, list[float]]:
    """Run every timer once per repetition, reversing the order on odd repetitions.

    Alternating ABC, CBA, ... puts each timer before and after the others equally
    often, so a change of machine load during the run biases no timer.
    """
    names = list(timers)
    times: dict[str, list[float]] = {name: [] for name in names}
    for repetition in range(repeats):
        order = names if repetition % 2 == 0 else names[::-1]
        for name in order:
            times[name].append(timers[name]())
        print(
            f"repetition {repetition + 1}/{repeats}: "
            + ", ".join(f"{name} {times[name][-1]:.3f} s" for name in names),
            flush=True,
        )
    return times


# ----------------------------------------------------------------------------
# Worker processes.
# ----------------------------------------------------------------------------

# Prefix of the stdout lines that carry the worker protocol; other output goes to stderr.
_PROTOCOL_PREFIX = "@bench "


class Worker:
    """A child process that sets up one framework and then runs named actions on request.

    Each framework runs in a process of its own, so PyTorch's OpenMP threads and
    XLA's thread pool never compete inside one process, and each process's peak
    memory is that framework's. Only one worker computes at a time: the others
    wait on their stdin.
    """

    def __init__(self, name: str, command: list[str], cpus: set[int] | None, log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("w", encoding="utf-8")

        def restrict_cpus() -> None:
            if cpus:
                os.sched_setaffinity(0, cpus)

        self._process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
            preexec_fn=restrict_cpus,
        )
        self.ready = self._read_reply()

    def _read_reply(self) -> dict[str, Any]:
        for line in self._process.stdout:
            if line.startswith(_PROTOCOL_PREFIX):
                return json.loads(line[len(_PROTOCOL_PREFIX) :])
        self._log.flush()
        tail = self.log_path.read_text(encoding="utf-8")[-3000:]
        raise RuntimeError(
            f"Benchmark worker {self.name} exited with code {self._process.wait()}; the end "
            f"of its log {self.log_path}:\n{tail}"
        )

    def request(self, action: str) -> dict[str, Any]:
        """Run one action in the worker and return its JSON reply."""
        self._process.stdin.write(action + "\n")
        self._process.stdin.flush()
        return self._read_reply()

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()
            self._process.wait(timeout=120)
        self._log.close()


def serve(setup: Callable[[], dict[str, Any]], actions: dict[str, Callable[[], Any]]) -> None:
    """Run as a worker: reply to setup, then to each action name read from stdin.

    Libraries that print to stdout are sent to stderr, so stdout carries only the
    protocol lines.
    """
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def reply(payload: dict[str, Any]) -> None:
        protocol.write(_PROTOCOL_PREFIX + json.dumps(payload, default=str) + "\n")

    reply(setup())
    for line in sys.stdin:
        name = line.strip()
        if name not in actions:
            reply({"error": f"unknown action {name!r}; expected one of {sorted(actions)}"})
            continue
        reply({"result": actions[name]()})


# ----------------------------------------------------------------------------
# Analytic FLOPs and the matmul peak.
# ----------------------------------------------------------------------------


def encoder_forward_flops(
    num_layers: int, hidden_size: int, intermediate_size: int, seq_len: int
) -> int:
    """Return the matmul FLOPs of one BERT-family encoder forward pass over one sequence.

    Counts 2 FLOPs per multiply-add in the Q, K, V and output projections, the two
    feed-forward matmuls, and the attention scores and weighted sum. Embedding
    lookups, layer norms, softmax, GELU and the small pooler and head are left out,
    as the usual transformer FLOP estimates do.
    """
    dense = 2 * seq_len * (4 * hidden_size * hidden_size + 2 * hidden_size * intermediate_size)
    attention = 2 * 2 * seq_len * seq_len * hidden_size
    return num_layers * (dense + attention)


def encoder_train_flops(
    num_layers: int, hidden_size: int, intermediate_size: int, seq_len: int
) -> int:
    """Return the matmul FLOPs of one training example: forward plus a backward of twice that."""
    return 3 * encoder_forward_flops(num_layers, hidden_size, intermediate_size, seq_len)


def make_matmul_peak(size: int = 2048) -> tuple[Callable[[], float], int]:
    """Return (timer of one jitted float32 [size, size] matmul, its FLOPs).

    The timer returns the seconds of the best of three calls, which estimates what
    the machine can give one matmul at the load of that moment.
    """
    import jax
    import jax.numpy as jnp

    left = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
    right = jax.random.normal(jax.random.PRNGKey(1), (size, size), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    matmul(left, right).block_until_ready()

    def timer() -> float:
        return min(time_call(lambda: matmul(left, right).block_until_ready()) for _ in range(3))

    return timer, 2 * size**3


# ----------------------------------------------------------------------------
# Inputs.
# ----------------------------------------------------------------------------


def synthetic_batch(
    batch_size: int, seq_len: int, vocab_size: int, num_labels: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Return a batch in the fsl_jax layout whose rows fill all seq_len tokens.

    Every token is real (attention_mask 1), so the padding strategy of a framework
    cannot change the work it does at this shape.
    """
    generator = np.random.default_rng(seed)
    input_ids = generator.integers(1000, vocab_size, (batch_size, seq_len)).astype(np.int32)
    input_ids[:, 0] = 101  # [CLS] of the BERT uncased vocabulary.
    input_ids[:, -1] = 102  # [SEP]
    return {
        "input_ids": input_ids,
        "attention_mask": np.ones((batch_size, seq_len), np.int32),
        "token_type_ids": np.zeros((batch_size, seq_len), np.int32),
        "labels": generator.integers(0, num_labels, batch_size).astype(np.int32),
        "example_mask": np.ones(batch_size, np.float32),
        "example_index": np.arange(batch_size, dtype=np.int32),
    }


def platform_summary() -> str:
    return f"{platform.machine()} {os.cpu_count()} logical CPUs"


# ----------------------------------------------------------------------------
# Where the time of a jitted step goes.
# ----------------------------------------------------------------------------

# (category, test on the jaxpr op path that XLA keeps in each instruction's metadata).
# The first matching test wins, so the order matters.
_CATEGORIES: list[tuple[str, Callable[[str, str], bool]]] = [
    ("dropout masks (random bits)", lambda op, _: "_bernoulli" in op or "threefry" in op),
    ("optimizer update and norms", lambda op, _: "Classifier" not in op),
    ("dropout (apply mask)", lambda op, _: "Dropout" in op or "/dropout/" in op),
    ("layer norm", lambda op, _: "LayerNorm" in op),
    (
        "dense matmuls (Q, K, V, output, feed-forward)",
        lambda op, name: _is_matmul(name, op)
        and any(part in op for part in ("/query/", "/key/", "/value/", "/output/", "/intermediate/")),
    ),
    ("attention scores, softmax and weighted sum", lambda op, _: "/attention/" in op),
    ("GELU", lambda op, _: "gelu" in op or "erf" in op),
    ("embeddings", lambda op, _: "embeddings" in op),
    ("bias adds, residuals and other elementwise", lambda op, _: True),
]


def _is_matmul(instruction: str, op_path: str) -> bool:
    return instruction.startswith(("dot", "ynn_fusion")) or op_path.endswith("dot_general")


def op_paths(hlo_text: str) -> dict[str, str]:
    """Map each HLO instruction name to the jaxpr op path in its metadata."""
    import re

    paths = {}
    for match in re.finditer(r"%([\w.\-]+) = .*?metadata=\{op_name=\"([^\"]+)\"", hlo_text):
        paths[match.group(1)] = match.group(2)
    return paths


def profile_categories(run: Callable[[], Any], hlo_text: str, trace_dir: Path) -> dict[str, Any]:
    """Trace one call of run and return its XLA op time per category.

    Op times are summed over XLA's CPU worker threads, so their total can exceed
    the wall time when two ops run at once. Returns {"wall_s", "op_seconds",
    "categories": {name: {"seconds", "share"}}}.
    """
    import jax
    from jax.profiler import ProfileData

    jax.profiler.start_trace(str(trace_dir))
    started = time.perf_counter()
    run()
    wall = time.perf_counter() - started
    jax.profiler.stop_trace()
    traces = sorted(trace_dir.glob("**/*.xplane.pb"), key=lambda path: path.stat().st_mtime)
    if not traces:
        raise FileNotFoundError(f"jax.profiler wrote no .xplane.pb under {trace_dir}.")
    profile = ProfileData.from_file(str(traces[-1]))

    paths = op_paths(hlo_text)
    seconds: dict[str, float] = {name: 0.0 for name, _ in _CATEGORIES}
    for plane in profile.planes:
        for line in plane.lines:
            if "XLAEigen" not in line.name:
                continue
            for event in line.events:
                name = event.name
                if name.startswith("ThunkExecutor") or "ThreadPool" in name or name.startswith("end:"):
                    continue
                path = paths.get(name, "")
                for category, matches in _CATEGORIES:
                    if matches(path, name):
                        seconds[category] += event.duration_ns / 1e9
                        break
    total = sum(seconds.values())
    return {
        "wall_s": wall,
        "op_seconds": total,
        "categories": {
            name: {"seconds": value, "share": value / total if total else float("nan")}
            for name, value in sorted(seconds.items(), key=lambda item: -item[1])
        },
    }
