"""Small training jobs shared by the train tests and the multi-process worker.

`small_config` is a real fine-tune job shrunk for tests: the teacher is layer 0 of
the packaged all-MiniLM-L6-v2 checkpoint, trained on the SST-2 16-shot split of
seed 13 with sequences cut to 32 tokens, so one pipeline run takes seconds. The
tiny random encoders below keep unit tests of the train step fast; they read real
SST-2 batches through the real tokenizer.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from configs import sst2_finetune

# small_config overrides for the default recipe, shrunk: 2 packed pair-stage passes,
# a logistic head, no classifier fine-tune.
DEFAULT_RECIPE = {
    "train.enabled": False,
    "model.head_init": "logistic",
    "contrastive.enabled": True,
    "contrastive.num_epochs": 2,
}

# Metrics of results.json that measure time, so they differ between identical runs.
TIMING_METRICS = ("test_inference_seconds", "wall_seconds", "inference_speedup")


def small_config(overrides: Mapping[str, Any] | None = None) -> ml_collections.ConfigDict:
    """Return the sst2_finetune config shrunk to a 1-layer teacher and 8 steps.

    overrides maps dotted keys (e.g. "train.num_steps") to values. The config is
    locked afterwards, so a misspelt key raises as it does on the command line.
    """
    config = sst2_finetune.get_config()
    config.seeds = (13,)
    config.model.keep_layers = (0,)
    # The pair stage has tests of its own (test_train_contrastive.py); off here keeps
    # each run to the classifier fine-tune.
    config.contrastive.enabled = False
    # The classifier fine-tune these tests exercise (the default recipe fits a logistic
    # head on the stage's vectors and stops there).
    config.train.enabled = True
    config.model.head_init = "prototypes"
    # Likewise the default deletion copies of sst2_finetune (augmentation tests set ops).
    config.augment.ops = ""
    config.augment.copies_per_example = 0
    config.max_length = 32
    config.train.length_buckets = (32,)
    config.train.num_steps = 8
    config.train.eval_every = 4
    config.train.log_every = 2
    config.compilation_cache_dir = ""
    for key, value in (overrides or {}).items():
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        if leaf not in node:
            raise KeyError(f"Unknown config key {key!r}.")
        node[leaf] = value
    config.lock()
    return config


def seed_metrics(results: Mapping[str, Any], seed: int = 13) -> dict[str, dict[str, float]]:
    """Return {model: {metric: value}} of one seed from a results dict, timings left out."""
    return {
        model: {
            name: summary["per_seed"][str(seed)]
            for name, summary in metrics.items()
            if name not in TIMING_METRICS
        }
        for model, metrics in results["models"].items()
    }


def tiny_encoder_config(num_layers: int = 2, vocab_size: int = 30522, dropout: float = 0.1):
    """Return a 2-layer, 32-wide BERT config with MiniLM's vocabulary size."""
    from fsl_jax.models import EncoderConfig

    return EncoderConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_layers=num_layers,
        num_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        hidden_dropout=dropout,
        attention_dropout=dropout,
    )


def tiny_classifier(num_layers: int = 2, dropout: float = 0.1, num_labels: int = 2, seed: int = 0):
    """Return (Classifier, host params) of a tiny random encoder with a mean-pooled head."""
    import jax

    from fsl_jax.models import Classifier
    from fsl_jax.train.finetune import init_params

    model = Classifier(
        tiny_encoder_config(num_layers, dropout=dropout),
        num_labels=num_labels,
        pooling="mean",
        classifier_dropout=dropout,
    )
    return model, init_params(model, None, jax.random.PRNGKey(seed))


def load_sst2(data_dir, minilm_dir, max_length: int = 64, seed: int = 13):
    """Return the encoded SST-2 16-shot splits of one seed, tokenized with MiniLM's tokenizer."""
    from fsl_jax import data as data_lib

    splits, vocab = data_lib.load_task("sst2", seed=seed, k=16, data_dir=data_dir)
    tokenizer = data_lib.Tokenizer.from_pretrained(minilm_dir)
    return {
        name: data_lib.encode_split(tokenizer, split, max_length, vocab)
        for name, split in splits.items()
    }


def host_copy(tree: Any) -> Any:
    """Copy a tree of arrays to host numpy, so later donation cannot touch it."""
    import jax

    return jax.tree.map(lambda leaf: np.array(leaf, copy=True), tree)
