"""Peer: plain Hugging Face PyTorch fine-tuning on LM-BFF K-shot splits.

For each seed, AutoModelForSequenceClassification loads the checkpoint with a
new classification head. Training uses AdamW (lr 2e-5), batch 8, 30 epochs,
max_length 128 and a linear decay to zero without warmup. Weight decay 0 and
gradient norm clipping at 1.0 are the Hugging Face Trainer defaults. There is
no model selection, so the model after the last epoch is scored on dev and test.

    python benchmarks/peer_hf_finetune.py --task sst2 \
        --output benchmarks/results/peer_hf_finetune_sst2.json
"""

from __future__ import annotations

import time

_PROCESS_START = time.perf_counter()  # Before the heavy imports, so total_wall_s includes them.

import logging  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

import peer_common  # noqa: E402  (sets the Hugging Face offline variables on import)
import torch  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    get_linear_schedule_with_warmup,
)

logger = logging.getLogger("peer_hf_finetune")

PEER = "hf_finetune"


def build_config(args) -> dict:
    """Return the training settings recorded in the report."""
    return {
        "learning_rate": args.learning_rate,
        "weight_decay": 0.0,
        "adam_betas": [0.9, 0.999],
        "adam_eps": 1e-8,
        "batch_size": args.batch_size,
        "num_epochs": args.num_epochs,
        "max_length": args.max_length,
        "schedule": "linear, no warmup",
        "max_grad_norm": 1.0,
        "eval_batch_size": args.eval_batch_size,
        "model_selection": "none (model after the last epoch)",
        "padding": "dynamic, to the longest sequence in each batch",
    }


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def tokenize(tokenizer, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    return tokenizer(
        texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )


@torch.no_grad()
def predict(model, tokenizer, texts: list[str], max_length: int, batch_size: int) -> np.ndarray:
    """Return the argmax class of each text, with dropout off."""
    model.eval()
    predictions = []
    for start in range(0, len(texts), batch_size):
        inputs = tokenize(tokenizer, texts[start : start + batch_size], max_length)
        logits = model(**inputs).logits
        predictions.append(logits.argmax(dim=-1).numpy())
    return np.concatenate(predictions)


def train(model, tokenizer, train_split, args, seed: int) -> None:
    """Fine-tune every parameter of `model` on the train split in place."""
    labels = torch.tensor(train_split.labels, dtype=torch.long)
    num_examples = len(train_split.texts)
    steps_per_epoch = math.ceil(num_examples / args.batch_size)
    total_steps = steps_per_epoch * args.num_epochs

    optimizer = torch.optim.AdamW(
        model.parameters(), lr=args.learning_rate, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0
    )
    scheduler = get_linear_schedule_with_warmup(
        optimizer, num_warmup_steps=0, num_training_steps=total_steps
    )
    # Shuffle order comes from its own generator, so it depends on the seed only.
    shuffle_generator = torch.Generator().manual_seed(seed)

    model.train()
    for epoch in range(args.num_epochs):
        order = torch.randperm(num_examples, generator=shuffle_generator).tolist()
        epoch_loss = 0.0
        for start in range(0, num_examples, args.batch_size):
            indices = order[start : start + args.batch_size]
            inputs = tokenize(tokenizer, [train_split.texts[i] for i in indices], args.max_length)
            loss = model(**inputs, labels=labels[indices]).loss
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"Training loss is {loss.item()} at seed {seed}, epoch {epoch + 1}. "
                    "Try a lower --learning_rate."
                )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            epoch_loss += loss.item() * len(indices)
        logger.info(
            "seed %d epoch %d/%d train_loss %.4f",
            seed,
            epoch + 1,
            args.num_epochs,
            epoch_loss / num_examples,
        )


def run_seed(args, data_dir, checkpoint_dir, seed: int) -> dict:
    """Load the model, fine-tune on one seed's train split, and score dev and test."""
    start = time.perf_counter()
    splits = peer_common.load_splits(data_dir, args.task, args.k_shot, seed)
    num_labels = peer_common.TASKS[args.task].num_labels

    # Seeding first makes the new classification head's initial weights depend on the seed.
    seed_everything(seed)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint_dir)
    model = AutoModelForSequenceClassification.from_pretrained(
        checkpoint_dir, num_labels=num_labels
    )
    train(model, tokenizer, splits["train"], args, seed)

    result = {}
    for split in ("dev", "test"):
        predictions = predict(
            model, tokenizer, splits[split].texts, args.max_length, args.eval_batch_size
        )
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
    parser.add_argument("--learning_rate", type=float, default=2e-5, help="AdamW peak rate.")
    parser.add_argument("--batch_size", type=int, default=8, help="Train batch size.")
    parser.add_argument("--num_epochs", type=int, default=30, help="Passes over the train split.")
    parser.add_argument("--max_length", type=int, default=128, help="Truncation length in tokens.")
    parser.add_argument("--eval_batch_size", type=int, default=64, help="Dev/test batch size.")
    args = parser.parse_args(argv)
    peer_common.configure_logging()

    torch.set_num_threads(args.threads)
    data_dir, checkpoint_dir = peer_common.resolve_paths(args)
    logger.info("%s on %s, seeds %s, checkpoint %s", PEER, args.task, args.seeds, checkpoint_dir)

    per_seed = {seed: run_seed(args, data_dir, checkpoint_dir, seed) for seed in args.seeds}

    report = peer_common.write_report(
        args.output,
        peer=PEER,
        args=args,
        checkpoint_dir=checkpoint_dir,
        data_dir=data_dir,
        versions=peer_common.package_versions(["torch", "transformers", "tokenizers", "numpy"]),
        config=build_config(args),
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
