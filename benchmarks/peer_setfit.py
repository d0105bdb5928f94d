"""Peer: SetFit with its default settings on LM-BFF K-shot splits.

For each seed, SetFitModel.from_pretrained loads the checkpoint as a
sentence-transformers body, with its own pooling, and adds scikit-learn's default
LogisticRegression head. setfit.Trainer trains it with default TrainingArguments.
Besides the seed, only settings that do not change training differ from the
defaults. Checkpoints go to a temporary folder, nothing is reported to
TensorBoard, and progress bars are off. Dev is not passed to the Trainer,
because the default eval_strategy "no" would not use it and SetFit's defaults
do no model selection. The trained model is scored on dev and test.

    python benchmarks/peer_setfit.py --task sst2 \
        --output benchmarks/results/peer_setfit_sst2.json
"""

from __future__ import annotations

import time

_PROCESS_START = time.perf_counter()  # Before the heavy imports, so total_wall_s includes them.

import logging  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import peer_common  # noqa: E402  (sets the Hugging Face offline variables on import)
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from setfit import SetFitModel, Trainer, TrainingArguments  # noqa: E402

logger = logging.getLogger("peer_setfit")

PEER = "setfit"


def build_config(arguments: TrainingArguments) -> dict:
    """Return the TrainingArguments fields that shape training, as recorded in the report."""
    fields = (
        "batch_size",
        "num_epochs",
        "max_steps",
        "sampling_strategy",
        "num_iterations",
        "body_learning_rate",
        "head_learning_rate",
        "warmup_proportion",
        "l2_weight",
        "max_length",
        "samples_per_label",
        "end_to_end",
        "use_amp",
        "margin",
    )
    config = {name: getattr(arguments, name) for name in fields}
    config["loss"] = arguments.loss.__name__
    config["head"] = "sklearn LogisticRegression() (SetFitModel default)"
    config["model_selection"] = "none (dev is only scored)"
    return {
        name: list(value) if isinstance(value, tuple) else value for name, value in config.items()
    }


def training_arguments(seed: int, output_dir: str) -> TrainingArguments:
    """Return the default TrainingArguments with the seed set and side outputs off."""
    return TrainingArguments(
        seed=seed, output_dir=output_dir, report_to="none", show_progress_bar=False
    )


def run_seed(args, data_dir, checkpoint_dir, seed: int) -> dict:
    """Load the model, train SetFit on one seed's train split, and score dev and test."""
    start = time.perf_counter()
    splits = peer_common.load_splits(data_dir, args.task, args.k_shot, seed)

    model = SetFitModel.from_pretrained(str(checkpoint_dir))
    train_dataset = Dataset.from_dict(
        {"text": splits["train"].texts, "label": splits["train"].labels}
    )
    with tempfile.TemporaryDirectory(prefix="peer_setfit_") as output_dir:
        trainer = Trainer(
            model=model, args=training_arguments(seed, output_dir), train_dataset=train_dataset
        )
        trainer.train()

    result = {}
    for split in ("dev", "test"):
        predictions = model.predict(splits[split].texts, as_numpy=True)
        result[f"{split}_accuracy"] = peer_common.accuracy_percent(
            predictions, splits[split].labels
        )
    result["wall_s"] = round(time.perf_counter() - start, 1)
    logger.info(
        "seed %d dev %.2f test %.2f wall %.1f s",
        seed,
        result["dev_accuracy"],
        result["test_accuracy"],
        result["wall_s"],
    )
    return result


def main(argv: list[str]) -> None:
    parser = peer_common.build_arg_parser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    peer_common.configure_logging()

    torch.set_num_threads(args.threads)
    data_dir, checkpoint_dir = peer_common.resolve_paths(args)
    logger.info("%s on %s, seeds %s, checkpoint %s", PEER, args.task, args.seeds, checkpoint_dir)

    per_seed = {seed: run_seed(args, data_dir, checkpoint_dir, seed) for seed in args.seeds}

    defaults = training_arguments(seed=args.seeds[0], output_dir="unused")
    config = build_config(defaults)
    config["overridden_arguments"] = {
        "seed": "the split seed",
        "output_dir": "a temporary folder",
        "report_to": "none",
        "show_progress_bar": False,
    }

    report = peer_common.write_report(
        args.output,
        peer=PEER,
        args=args,
        checkpoint_dir=checkpoint_dir,
        data_dir=data_dir,
        versions=peer_common.package_versions(
            [
                "setfit",
                "sentence-transformers",
                "scikit-learn",
                "datasets",
                "torch",
                "transformers",
                "tokenizers",
                "numpy",
            ]
        ),
        config=config,
        per_seed=per_seed,
        total_wall_s=time.perf_counter() - _PROCESS_START,
    )
    accuracy = report["test_accuracy"]
    logger.info(
        "%s %s test accuracy %.2f ± %.2f over %d seeds, total %.1f s",
        PEER,
        args.task,
        accuracy["mean"],
        accuracy["std"],
        len(per_seed),
        report["total_wall_s"],
    )


if __name__ == "__main__":
    main(sys.argv[1:])
