"""Train- and eval-step throughput of fsl_jax against Hugging Face PyTorch at one fixed shape.

Both frameworks fine-tune all-MiniLM-L6-v2 on the same synthetic batch, in which
every token is real, so padding cannot change the work. Each framework runs in a
worker process of its own for every CPU count in --threads, and the coordinator
interleaves the workers' repetitions so they see the same machine load. Also
measured in the same run: a jitted float32 matmul as the machine's peak, the model
FLOPs utilisation (MFU) of both train steps, where the fsl_jax train step spends
its time (jax.profiler), and the peak host memory of every worker.

    python benchmarks/bench_train_step.py \
        --output benchmarks/results/bench_train_step.json

fsl_jax runs the SST-2 job's model and optimizer (configs/common.py: mean pooling,
cosine head, dropout 0.1, AdamW with clipping and a linear schedule). PyTorch runs
the plain fine-tune of benchmarks/peer_hf_finetune.py: AutoModelForSequenceClassification,
AdamW lr 2e-5, gradient clipping at 1.0, a linear schedule, dropout 0.1.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import bench_common

REPO_ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------
# fsl_jax.
# ----------------------------------------------------------------------------


class JaxSteps:
    """fsl_jax train and eval steps of the SST-2 job's classifier at fixed shapes."""

    def __init__(self, checkpoint: str, dtype: str, num_labels: int = 2):
        import jax

        from configs import common
        from fsl_jax.checkpoints import load_encoder, resolve_checkpoint
        from fsl_jax.train import finetune
        from fsl_jax.train.mesh import make_mesh
        from fsl_jax.train.optimizer import make_optimizer
        from fsl_jax.train.state import create_train_state
        from fsl_jax.train.steps import make_eval_step, make_train_step

        config = common.get_base_config()
        config.model.dtype = dtype
        self.mesh = make_mesh()
        self.encoder_config, encoder_params = load_encoder(resolve_checkpoint(checkpoint))
        self.model = finetune.build_classifier(config.model, self.encoder_config, num_labels)
        params = finetune.init_params(self.model, encoder_params, jax.random.PRNGKey(0))
        # 1000 scheduled steps keep the learning rate away from zero during the benchmark.
        optimizer, _ = make_optimizer(config.optimizer, params, 1000, self.encoder_config.num_layers)
        self.state = create_train_state(params, optimizer, 0, self.mesh)
        self.train_step = make_train_step(
            finetune.classification_loss(self.model), optimizer, self.state, self.mesh
        )
        self.eval_params = jax.device_put(params)
        self.eval_step = make_eval_step(finetune.eval_apply(self.model), self.eval_params, self.mesh)

    def place(self, batch: dict) -> dict:
        from fsl_jax.train.mesh import to_global_batch

        return to_global_batch(batch, self.mesh)

    def compile(self, train_batch: dict, eval_batch: dict) -> float:
        """Compile both steps for these batch shapes; return the seconds it took."""
        started = time.perf_counter()
        self.compiled_train = self.train_step.lower(self.state, train_batch).compile()
        self.compiled_eval = self.eval_step.lower(self.eval_params, eval_batch).compile()
        return time.perf_counter() - started

    def train(self, batch: dict) -> None:
        import jax

        self.state, metrics = self.compiled_train(self.state, batch)
        jax.block_until_ready(metrics)

    def evaluate(self, batch: dict) -> None:
        import jax

        jax.block_until_ready(self.compiled_eval(self.eval_params, batch))


# ----------------------------------------------------------------------------
# Hugging Face PyTorch.
# ----------------------------------------------------------------------------


class TorchSteps:
    """Hugging Face PyTorch train and eval steps, as benchmarks/peer_hf_finetune.py trains."""

    def __init__(self, checkpoint: str, threads: int, num_labels: int = 2):
        import torch
        from transformers import (
            AutoModelForSequenceClassification,
            get_linear_schedule_with_warmup,
        )

        from fsl_jax.checkpoints import resolve_checkpoint

        torch.set_num_threads(threads)
        torch.manual_seed(0)
        self.torch = torch
        self.model = AutoModelForSequenceClassification.from_pretrained(
            resolve_checkpoint(checkpoint), num_labels=num_labels
        )
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=2e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0
        )
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, 0, 1000)

    def place(self, batch: dict) -> dict:
        torch = self.torch
        inputs = {
            key: torch.from_numpy(batch[key]).long()
            for key in ("input_ids", "attention_mask", "token_type_ids")
        }
        inputs["labels"] = torch.from_numpy(batch["labels"]).long()
        return inputs

    def train(self, inputs: dict) -> None:
        self.model.train()
        loss = self.model(**inputs).loss
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        loss.item()

    def evaluate(self, inputs: dict) -> None:
        self.model.eval()
        with self.torch.no_grad():
            features = {key: value for key, value in inputs.items() if key != "labels"}
            self.model(**features).logits.argmax(-1)


# ----------------------------------------------------------------------------
# Worker side: one framework per process.
# ----------------------------------------------------------------------------


def run_worker(args: argparse.Namespace) -> None:
    """Set up one framework's steps and serve timing requests (see bench_common.serve)."""
    framework, threads = args.worker, args.threads[0]
    batch = bench_common.synthetic_batch(args.batch_size, args.seq_len, 30522, 2)
    eval_batch = bench_common.synthetic_batch(args.eval_batch_size, args.seq_len, 30522, 2, seed=1)
    state: dict[str, Any] = {}

    def setup() -> dict[str, Any]:
        if framework == "fsl_jax":
            steps = JaxSteps(args.checkpoint, args.dtype)
            train_inputs, eval_inputs = steps.place(batch), steps.place(eval_batch)
            compile_s = steps.compile(train_inputs, eval_inputs)
            state["peak_timer"], _ = bench_common.make_matmul_peak(args.peak_size)
        else:
            steps = TorchSteps(args.checkpoint, threads)
            train_inputs, eval_inputs = steps.place(batch), steps.place(eval_batch)
            compile_s = 0.0
        # Warm-up: the first calls allocate buffers (and build PyTorch's autograd caches).
        for _ in range(2):
            steps.train(train_inputs)
        steps.evaluate(eval_inputs)
        state.update(steps=steps, train_inputs=train_inputs, eval_inputs=eval_inputs)
        return {"compile_s": compile_s, "cpus": sorted(os.sched_getaffinity(0))}

    def profile() -> dict[str, Any]:
        steps = state["steps"]
        with tempfile.TemporaryDirectory() as trace_dir:
            return bench_common.profile_categories(
                lambda: steps.train(state["train_inputs"]),
                steps.compiled_train.as_text(),
                Path(trace_dir),
            )

    bench_common.serve(
        setup,
        {
            "train": lambda: bench_common.time_call_with_cpu(
                lambda: state["steps"].train(state["train_inputs"])
            ),
            "eval": lambda: bench_common.time_call_with_cpu(
                lambda: state["steps"].evaluate(state["eval_inputs"])
            ),
            "peak": lambda: state["peak_timer"](),
            "profile": profile,
            "peak_rss_mib": bench_common.peak_rss_mib,
        },
    )


# ----------------------------------------------------------------------------
# Coordinator: start the workers, interleave their repetitions, report.
# ----------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="all-MiniLM-L6-v2", help="Model directory or name.")
    parser.add_argument("--batch_size", type=int, default=32, help="Train batch rows.")
    parser.add_argument("--eval_batch_size", type=int, default=64, help="Eval batch rows.")
    parser.add_argument("--seq_len", type=int, default=128, help="Tokens per row.")
    parser.add_argument("--repeats", type=int, default=5, help="Interleaved repetitions.")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1, 2],
        help="CPU counts to compare at. At N, both frameworks run on CPUs 0..N-1 "
        "(sched_setaffinity, which also sizes XLA's thread pool) and PyTorch uses "
        "torch.set_num_threads(N).",
    )
    parser.add_argument(
        "--dtype", default="float32", help="fsl_jax compute dtype: float32 or bfloat16."
    )
    parser.add_argument("--peak_size", type=int, default=2048, help="Side of the peak matmul.")
    parser.add_argument("--no_profile", action="store_true", help="Skip the jax.profiler trace.")
    parser.add_argument(
        "--worker", choices=("fsl_jax", "torch"), default=None, help=argparse.SUPPRESS
    )
    bench_common.add_output_argument(parser, "bench_train_step.json")
    return parser.parse_args(argv)


def start_workers(args: argparse.Namespace, log_dir: Path) -> dict[str, bench_common.Worker]:
    """Start an fsl_jax and a PyTorch worker for every CPU count in args.threads."""
    available = sorted(os.sched_getaffinity(0))
    workers = {}
    for threads in args.threads:
        if threads > len(available):
            raise ValueError(f"--threads {threads} but only {len(available)} CPUs are available.")
        cpus = set(available[:threads])
        for framework in ("fsl_jax", "torch"):
            command = [
                sys.executable,
                __file__,
                "--worker",
                framework,
                "--threads",
                str(threads),
                "--checkpoint",
                args.checkpoint,
                "--batch_size",
                str(args.batch_size),
                "--eval_batch_size",
                str(args.eval_batch_size),
                "--seq_len",
                str(args.seq_len),
                "--dtype",
                args.dtype,
                "--peak_size",
                str(args.peak_size),
            ]
            name = f"{framework}_{threads}cpu"
            print(f"starting {name} on CPUs {sorted(cpus)}", flush=True)
            workers[name] = bench_common.Worker(name, command, cpus, log_dir)
            print(f"{name} ready: {workers[name].ready}", flush=True)
    return workers


def build_report(args, workers, times, cpu_times, flops_per_example) -> dict[str, Any]:
    """Return the report: throughput, ratios and MFU per CPU count."""
    per_threads = {}
    for threads in args.threads:
        jax_name, torch_name = f"fsl_jax_{threads}cpu", f"torch_{threads}cpu"
        entry: dict[str, Any] = {}
        for kind, rows in (("train", args.batch_size), ("eval", args.eval_batch_size)):
            jax_times, torch_times = times[f"{jax_name}/{kind}"], times[f"{torch_name}/{kind}"]
            entry[kind] = {
                "fsl_jax": {
                    "seconds": bench_common.summary(jax_times),
                    "examples_per_s": rows / bench_common.summary(jax_times)["median"],
                },
                "torch": {
                    "seconds": bench_common.summary(torch_times),
                    "examples_per_s": rows / bench_common.summary(torch_times)["median"],
                },
                # torch time / fsl_jax time of the same repetition: > 1 means fsl_jax is faster.
                "speedup_fsl_jax_over_torch": bench_common.ratio_summary(torch_times, jax_times),
                "cpu_seconds": {
                    "fsl_jax": bench_common.summary(cpu_times[f"{jax_name}/{kind}"]),
                    "torch": bench_common.summary(cpu_times[f"{torch_name}/{kind}"]),
                },
                "cpu_time_ratio_torch_over_fsl_jax": bench_common.ratio_summary(
                    cpu_times[f"{torch_name}/{kind}"], cpu_times[f"{jax_name}/{kind}"]
                ),
            }
        # GFLOP/s of the peak matmul in each repetition.
        peaks = [2 * args.peak_size**3 / seconds / 1e9 for seconds in times[f"{jax_name}/peak"]]
        step_flops = flops_per_example * args.batch_size
        mfu = {"peak_gflops": bench_common.summary(peaks)}
        for framework, name in (("fsl_jax", jax_name), ("torch", torch_name)):
            # Per repetition: the step's FLOP rate over the peak measured next to it.
            ratios = [
                step_flops / seconds / 1e9 / peak
                for seconds, peak in zip(times[f"{name}/train"], peaks)
            ]
            mfu[framework] = {
                "achieved_gflops": step_flops / entry["train"][framework]["seconds"]["median"] / 1e9,
                "mfu": bench_common.summary(ratios),
            }
        entry["mfu"] = mfu
        entry["fsl_jax_compile_s"] = workers[jax_name].ready["compile_s"]
        entry["cpus"] = workers[jax_name].ready["cpus"]
        per_threads[str(threads)] = entry
    return {
        "benchmark": "train_step",
        "checkpoint": args.checkpoint,
        "shape": {
            "batch_size": args.batch_size,
            "eval_batch_size": args.eval_batch_size,
            "seq_len": args.seq_len,
        },
        "fsl_jax_dtype": args.dtype,
        "train_flops_per_example": flops_per_example,
        "train_flops_per_step": flops_per_example * args.batch_size,
        "peak_matmul_size": args.peak_size,
        "by_cpu_count": per_threads,
        "times_s": times,
        "cpu_times_s": cpu_times,
    }


def print_figures(report: dict[str, Any]) -> None:
    shape = report["shape"]
    print(
        f"\ntrain FLOPs per example (analytic): {report['train_flops_per_example'] / 1e9:.2f} GFLOP"
    )
    for threads, entry in report["by_cpu_count"].items():
        print(f"\n== {threads} CPU(s) ==")
        for kind, rows in (("train", shape["batch_size"]), ("eval", shape["eval_batch_size"])):
            values = entry[kind]
            ratio = values["speedup_fsl_jax_over_torch"]
            print(
                f"{kind} {rows} x {shape['seq_len']}: fsl_jax {values['fsl_jax']['examples_per_s']:.2f} "
                f"examples/s (spread {values['fsl_jax']['seconds']['spread']:.0%}), torch "
                f"{values['torch']['examples_per_s']:.2f} examples/s (spread "
                f"{values['torch']['seconds']['spread']:.0%}); fsl_jax/torch {ratio['median']:.2f}x "
                f"(range {ratio['min']:.2f}-{ratio['max']:.2f}); CPU-time ratio "
                f"{values['cpu_time_ratio_torch_over_fsl_jax']['median']:.2f}x"
            )
        mfu = entry["mfu"]
        print(
            f"f32 matmul peak {mfu['peak_gflops']['median']:.1f} GFLOP/s; MFU fsl_jax "
            f"{mfu['fsl_jax']['mfu']['median']:.0%} ({mfu['fsl_jax']['achieved_gflops']:.1f} GFLOP/s), "
            f"torch {mfu['torch']['mfu']['median']:.0%} ({mfu['torch']['achieved_gflops']:.1f} GFLOP/s)"
        )
    if report.get("profile"):
        print("\n== fsl_jax train step: XLA op time by category ==")
        for name, values in report["profile"]["categories"].items():
            print(f"{values['share']:6.1%}  {values['seconds']:6.2f} s  {name}")
    memory = report["peak_rss_mib"]
    print("\n== peak host memory (MiB) ==")
    print(", ".join(f"{name} {value:.0f}" for name, value in memory.items()))


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.worker:
        run_worker(args)
        return

    from fsl_jax.checkpoints import load_hf_config, resolve_checkpoint

    config = load_hf_config(resolve_checkpoint(args.checkpoint))
    flops_per_example = bench_common.encoder_train_flops(
        config.num_layers, config.hidden_size, config.intermediate_size, args.seq_len
    )
    with tempfile.TemporaryDirectory() as log_dir:
        workers = start_workers(args, Path(log_dir))
        try:
            cpu_times: dict[str, list[float]] = {}

            def timer(worker: bench_common.Worker, action: str, key: str) -> float:
                result = worker.request(action)["result"]
                if action == "peak":
                    return result
                wall, cpu = result
                cpu_times.setdefault(key, []).append(cpu)
                return wall

            timers: dict[str, Callable[[], float]] = {}
            for name, worker in workers.items():
                actions = ("train", "eval", "peak") if name.startswith("fsl_jax") else ("train", "eval")
                for action in actions:
                    key = f"{name}/{action}"
                    timers[key] = lambda worker=worker, action=action, key=key: timer(
                        worker, action, key
                    )
            times = bench_common.interleave(timers, args.repeats)
            report = build_report(args, workers, times, cpu_times, flops_per_example)
            if not args.no_profile:
                default = f"fsl_jax_{max(args.threads)}cpu"
                report["profile"] = workers[default].request("profile")["result"]
                report["profile"]["worker"] = default
            report["peak_rss_mib"] = {
                name: worker.request("peak_rss_mib")["result"] for name, worker in workers.items()
            }
        finally:
            for worker in workers.values():
                worker.close()
    report.update(bench_common.run_description())
    print_figures(report)
    bench_common.write_report(args.output, report)


if __name__ == "__main__":
    main(sys.argv[1:])
