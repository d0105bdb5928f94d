"""Distillation step cost against the teacher's fine-tune step, fused and cached teacher.

Three jitted fsl_jax train steps on one fixed synthetic batch, timed in interleaved
repetitions in one process:

  teacher  the fine-tune step of the 6-layer all-MiniLM-L6-v2 teacher
  fused    a distillation step of the 2-layer student that runs the teacher's
           forward pass inside the step (distill.cache_teacher=False)
  cached   the same student step reading teacher outputs precomputed once with
           fsl_jax.train.distill.teacher_cache (distill.cache_teacher=True)

Model, objective (KD + CE at temperature 2), student layers and optimizers come
from configs/sst2_distill.py. The cached path also pays once per transfer set for
the teacher_cache call, which is reported with the compilation of its eval step.

    python benchmarks/bench_distill_step.py \
        --output benchmarks/results/bench_distill_step.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import bench_common


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=32, help="Train batch rows.")
    parser.add_argument("--seq_len", type=int, default=128, help="Tokens per row.")
    parser.add_argument("--repeats", type=int, default=5, help="Interleaved repetitions.")
    parser.add_argument(
        "--cpus",
        type=int,
        default=0,
        help="Run on CPUs 0..N-1 (sched_setaffinity, which sizes XLA's thread pool); 0: all.",
    )
    bench_common.add_output_argument(parser, "bench_distill_step.json")
    return parser.parse_args(argv)


class DistillSteps:
    """The teacher fine-tune step and the fused and cached student distillation steps."""

    def __init__(self, batch_size: int, seq_len: int):
        import jax
        import numpy as np

        from configs import sst2_distill
        from fsl_jax.checkpoints import load_encoder, resolve_checkpoint
        from fsl_jax.data import EncodedDataset, make_batch
        from fsl_jax.losses import build_objective
        from fsl_jax.train import distill, finetune
        from fsl_jax.train.mesh import make_mesh, to_global_batch
        from fsl_jax.train.optimizer import make_optimizer
        from fsl_jax.train.state import create_train_state
        from fsl_jax.train.steps import make_train_step

        config = sst2_distill.get_config()
        num_labels = 2
        self.mesh = mesh = make_mesh()
        teacher_config, teacher_encoder = load_encoder(resolve_checkpoint(config.checkpoint))
        self.teacher = finetune.build_classifier(config.model, teacher_config, num_labels)
        teacher_params = finetune.init_params(
            self.teacher, teacher_encoder, jax.random.PRNGKey(0)
        )

        # Teacher fine-tune step.
        teacher_optimizer, _ = make_optimizer(
            config.optimizer, teacher_params, 1000, teacher_config.num_layers
        )
        self.teacher_state = create_train_state(teacher_params, teacher_optimizer, 0, mesh)
        self.teacher_step = make_train_step(
            finetune.classification_loss(self.teacher),
            teacher_optimizer,
            self.teacher_state,
            mesh,
        )

        # Student and objective, as fsl_jax.pipeline.distill_student builds them.
        student_config, student_encoder = distill.build_student(
            config.distill.student, teacher_config, teacher_params["encoder"]
        )
        self.student_layers = student_config.num_layers
        student = finetune.build_classifier(config.model, student_config, num_labels)
        student_params = finetune.init_params(student, student_encoder, jax.random.PRNGKey(1))
        student_params["head"] = jax.tree.map(np.array, teacher_params["head"])
        self.objective = objective = build_objective(config.distill)
        objective_params = distill.init_objective_params(
            objective, student, student_params, self.teacher, teacher_params, jax.random.PRNGKey(2)
        )
        params = {"student": student_params, "objective": objective_params}
        student_optimizer, _ = make_optimizer(
            config.distill.optimizer, params, 1000, student_config.num_layers
        )
        loss_fn = distill.distillation_loss(student, self.teacher, objective)
        self.states = {}
        self.steps = {}
        for name in ("fused", "cached"):
            self.states[name] = create_train_state(
                params, student_optimizer, 0, mesh, teacher_params=teacher_params
            )
            self.steps[name] = make_train_step(loss_fn, student_optimizer, self.states[name], mesh)

        # One batch in the layout of the pipeline: every token real, all rows labelled.
        arrays = bench_common.synthetic_batch(
            batch_size, seq_len, teacher_config.vocab_size, num_labels
        )
        transfer = EncodedDataset(
            input_ids=arrays["input_ids"],
            attention_mask=arrays["attention_mask"],
            token_type_ids=arrays["token_type_ids"],
            lengths=np.full(batch_size, seq_len, np.int32),
            labels=arrays["labels"],
            sep_token_id=102,
            pad_token_id=0,
            name="synthetic",
        )
        batch = make_batch(transfer, np.arange(batch_size), batch_size, (seq_len,))
        batch["label_mask"] = np.ones(batch_size, np.float32)
        settings = finetune.TrainSettings.from_config(
            config.train.copy_and_resolve_references(), batch_size, mesh
        )
        settings.eval_batch_size = batch_size
        settings.length_buckets = (seq_len,)
        # teacher_cache builds and compiles its own eval step, once per transfer set.
        started = time.perf_counter()
        cache = distill.teacher_cache(
            self.teacher, teacher_params, transfer, objective, settings, mesh
        )
        self.cache_s = time.perf_counter() - started
        self.cache_keys = sorted(cache)
        cached_batch = next(distill.add_per_example(iter([batch]), cache))
        self.batches = {
            "teacher": to_global_batch(
                {key: value for key, value in batch.items() if key != "label_mask"}, mesh
            ),
            "fused": to_global_batch(batch, mesh),
            "cached": to_global_batch(cached_batch, mesh),
        }

    def run(self, name: str) -> None:
        import jax

        if name == "teacher":
            self.teacher_state, metrics = self.teacher_step(self.teacher_state, self.batches[name])
        else:
            self.states[name], metrics = self.steps[name](self.states[name], self.batches[name])
        jax.block_until_ready(metrics)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.cpus:
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: args.cpus]))

    from fsl_jax.checkpoints import load_hf_config, resolve_checkpoint

    steps = DistillSteps(args.batch_size, args.seq_len)
    names = ("teacher", "fused", "cached")
    compile_s = {name: bench_common.time_call(lambda name=name: steps.run(name)) for name in names}
    for name in names:
        steps.run(name)
    times = bench_common.interleave(
        {name: (lambda name=name: bench_common.time_call(lambda: steps.run(name))) for name in names},
        args.repeats,
    )

    config = load_hf_config(resolve_checkpoint("all-MiniLM-L6-v2"))
    sizes = (config.hidden_size, config.intermediate_size, args.seq_len)
    teacher_forward = bench_common.encoder_forward_flops(config.num_layers, *sizes)
    teacher_train = bench_common.encoder_train_flops(config.num_layers, *sizes)
    student_train = bench_common.encoder_train_flops(steps.student_layers, *sizes)
    report: dict[str, Any] = {
        "benchmark": "distill_step",
        "shape": {"batch_size": args.batch_size, "seq_len": args.seq_len},
        "student_layers": steps.student_layers,
        "objective": repr(steps.objective),
        "cache_keys": steps.cache_keys,
        "cpus": sorted(os.sched_getaffinity(0)),
        "compile_and_first_step_s": compile_s,
        "seconds": {name: bench_common.summary(times[name]) for name in names},
        "relative_to_teacher_step": {
            name: bench_common.ratio_summary(times[name], times["teacher"])
            for name in ("fused", "cached")
        },
        "analytic_flops_relative_to_teacher_step": {
            "fused": (teacher_forward + student_train) / teacher_train,
            "cached": student_train / teacher_train,
        },
        # One teacher_cache call over the batch, compilation of its eval step included.
        "teacher_cache_s": steps.cache_s,
        "times_s": times,
    }
    report.update(bench_common.run_description())

    print(f"\n== batch {args.batch_size} x {args.seq_len}, student {steps.student_layers} layers ==")
    teacher_median = report["seconds"]["teacher"]["median"]
    print(f"teacher fine-tune step {teacher_median:.2f} s (spread {report['seconds']['teacher']['spread']:.0%})")
    for name in ("fused", "cached"):
        ratio = report["relative_to_teacher_step"][name]
        analytic = report["analytic_flops_relative_to_teacher_step"][name]
        print(
            f"{name:6s} distill step {report['seconds'][name]['median']:.2f} s: "
            f"{ratio['median']:.2f}x the teacher step (range {ratio['min']:.2f}-{ratio['max']:.2f}; "
            f"matmul FLOPs {analytic:.2f}x)"
        )
    print(
        f"teacher cache: {steps.cache_s:.2f} s for {args.batch_size} examples including its "
        "compilation, paid once per transfer set"
    )
    bench_common.write_report(args.output, report)


if __name__ == "__main__":
    main(sys.argv[1:])
