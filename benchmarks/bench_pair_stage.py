"""Pair-stage step on real SST-2 sentences: padded batch against packed batch.

Three jitted fsl_jax train steps of the in-batch pair stage (fsl_jax.train.contrastive),
timed in interleaved repetitions in one process, on the 32 training sentences of
the SST-2 16-shot split of one seed, as the default job runs them:

  padded        every sentence padded to the bucket of the longest (pack=False)
  packed        sentences laid end to end in rows of the largest bucket (pack=True)
  packed_norms  packed, with the norms of updates and params as metrics
                (train.norm_metrics=True)

Model, stage optimizer and buckets come from configs/sst2_finetune.py. The report
gives the step times, their ratios, each step's compilation and first run, and the
token slots (rows x width) of each batch.

    python benchmarks/bench_pair_stage.py --output benchmarks/results/bench_pair_stage.json
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import bench_common


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=13, help="SST-2 16-shot split seed.")
    parser.add_argument("--repeats", type=int, default=5, help="Interleaved repetitions.")
    bench_common.add_output_argument(parser, "bench_pair_stage.json")
    return parser.parse_args(argv)


class PairSteps:
    """The pair-stage train step with its padded and packed batch of one seed's sentences."""

    def __init__(self, seed: int):
        import jax
        import numpy as np

        from configs import sst2_finetune
        from fsl_jax import data as data_lib
        from fsl_jax.checkpoints import load_encoder, resolve_checkpoint
        from fsl_jax.train import contrastive, finetune
        from fsl_jax.train.mesh import make_mesh, to_global_batch
        from fsl_jax.train.optimizer import make_optimizer
        from fsl_jax.train.state import create_train_state
        from fsl_jax.train.steps import make_train_step

        config = sst2_finetune.get_config()
        section = config.contrastive
        checkpoint_dir = resolve_checkpoint(config.checkpoint)
        tokenizer = data_lib.Tokenizer.from_pretrained(checkpoint_dir)
        splits, vocab = data_lib.load_task(config.task, seed=seed, k=config.k)
        train = data_lib.encode_split(tokenizer, splits["train"], config.max_length, vocab)
        buckets = tuple(config.train.length_buckets)
        width = max(buckets)
        rows = np.arange(len(train))[: section.sentences_per_step]

        self.mesh = mesh = make_mesh()
        encoder_config, encoder_params = load_encoder(checkpoint_dir)
        model = finetune.build_classifier(config.model, encoder_config, len(vocab))
        params = finetune.init_params(model, encoder_params, jax.random.PRNGKey(seed))
        trainable = {"encoder": params["encoder"]}
        optimizer, _ = make_optimizer(config.optimizer, trainable, 100, encoder_config.num_layers)
        loss_fn = contrastive.in_batch_cosine_loss(model, params["head"])

        num_rows, num_segments = data_lib.packed_shape(train.lengths, [rows], width, mesh.size)
        batches = {
            "padded": data_lib.make_batch(train, rows, len(rows), buckets),
            "packed": data_lib.make_packed_batch(train, rows, width, num_rows, num_segments),
        }
        batches["packed_norms"] = batches["packed"]
        self.slots = {name: int(batch["input_ids"].size) for name, batch in batches.items()}
        self.real_tokens = int(train.lengths[rows].sum())
        self.batches = {name: to_global_batch(batch, mesh) for name, batch in batches.items()}
        self.states = {}
        self.steps = {}
        for name in batches:
            self.states[name] = create_train_state(trainable, optimizer, seed, mesh)
            self.steps[name] = make_train_step(
                loss_fn, optimizer, self.states[name], mesh, norm_metrics=name == "packed_norms"
            )

    def run(self, name: str) -> None:
        import jax

        self.states[name], metrics = self.steps[name](self.states[name], self.batches[name])
        jax.block_until_ready(metrics)


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    steps = PairSteps(args.seed)
    names = ("padded", "packed", "packed_norms")
    compile_s = {name: bench_common.time_call(lambda name=name: steps.run(name)) for name in names}
    times = bench_common.interleave(
        {
            name: (lambda name=name: bench_common.time_call(lambda: steps.run(name)))
            for name in names
        },
        args.repeats,
    )
    speedup = bench_common.ratio_summary(times["padded"], times["packed"])
    norms_cost = bench_common.ratio_summary(times["packed_norms"], times["packed"])
    report: dict[str, Any] = {
        "benchmark": "pair_stage",
        "task": "sst2",
        "seed": args.seed,
        "real_tokens": steps.real_tokens,
        "token_slots": steps.slots,
        "compile_and_first_step_s": compile_s,
        "seconds": {name: bench_common.summary(times[name]) for name in names},
        "speedup_padded_over_packed": speedup,
        "packed_norms_over_packed": norms_cost,
        "times_s": times,
    }
    report.update(bench_common.run_description())

    print(f"\n== SST-2 seed {args.seed}: {steps.real_tokens} real tokens per step ==")
    for name in names:
        seconds = report["seconds"][name]
        print(
            f"{name:6s} {steps.slots[name]:5d} token slots, step {seconds['median']:.3f} s "
            f"(spread {seconds['spread']:.0%})"
        )
    print(
        f"packed step is {speedup['median']:.2f}x as fast as padded "
        f"(range {speedup['min']:.2f}-{speedup['max']:.2f})"
    )
    print(
        f"packed step with norm metrics takes {norms_cost['median']:.3f}x the time "
        f"(range {norms_cost['min']:.3f}-{norms_cost['max']:.3f})"
    )
    for name in names:
        print(f"{name}: compilation and first step {compile_s[name]:.2f} s")
    bench_common.write_report(args.output, report)


if __name__ == "__main__":
    main(sys.argv[1:])
