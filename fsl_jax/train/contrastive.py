"""Contrastive sentence-pair stage before classifier fine-tuning (the SetFit recipe).

With 16 examples per class, a classifier head trained on top of the encoder gets
few gradients that shape the sentence space. This stage trains the encoder on
pairs of labelled sentences instead: the cosine similarity of their pooled
vectors is regressed onto 1 for a same-class pair and 0 for a cross-class pair.
N examples give N(N+1)/2 pairs, so the encoder trains on far more distinct
targets than the N labels. A head is then fitted on the tuned encoder's vectors
(fsl_jax/train/heads.py), optionally followed by classifier fine-tuning.

Pairs (`pairs` in the config section):
  'oversampling'  every unordered pair (i <= j) once, then the smaller of the
                  positive and negative sets repeated until both have the size of
                  the larger; positive and negative pairs alternate.
  'unique'        every unordered pair once.
  num_iterations  > 0 replaces both: num_iterations * N positive and as many
                  negative pairs, drawn with replacement.
  'in_batch'      each step encodes `sentences_per_step` examples once and scores
                  every pair among them (i < j); the loss is the mean over
                  same-class pairs plus the mean over cross-class pairs, halved. An
                  epoch visits every example once, so on a 32-example split one
                  step covers all 496 pairs for the cost of encoding 32 sentences,
                  where the listed strategies encode 2 sentences per pair. With
                  `ce_weight` > 0 the step also trains the classifier head with
                  cross-entropy on the same forward pass.
Each epoch shuffles its pairs with a key from (seed, epoch), so a run is
reproducible and a resumed run draws the batches it would have drawn.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh

from fsl_jax.data import EncodedDataset, make_batch, make_packed_batch, packed_shape
from fsl_jax.data.encoding import TOKEN_KEYS
from fsl_jax.evaluate.metrics import classification_metrics
from fsl_jax.models import Classifier
from fsl_jax.train import heads
from fsl_jax.train.checkpointing import Checkpointer
from fsl_jax.train.loop import LoopSettings, train_loop
from fsl_jax.train.optimizer import make_optimizer
from fsl_jax.train.state import create_train_state
from fsl_jax.train.steps import make_train_step, masked_cross_entropy
from fsl_jax.train.writers import MetricWriter

PAIR_STRATEGIES = ("oversampling", "unique")
IN_BATCH = "in_batch"
SIDES = ("a", "b")


def default_config() -> ml_collections.ConfigDict:
    """Return the `contrastive` section of a run config; off unless enabled."""
    return ml_collections.ConfigDict(
        dict(
            enabled=False,
            pairs="oversampling",
            num_iterations=0,  # > 0: this many positive and negative pairs per example.
            num_epochs=1,
            batch_size=16,  # pairs per step; each step encodes 2 * batch_size sentences.
            sentences_per_step=32,  # pairs='in_batch' only: examples encoded per step.
            learning_rate=2e-5,
            warmup_ratio=0.1,
            # Steps between dev scores of the nearest-class-mean classifier (0: at the
            # end only). The best-scoring encoder goes on to fine-tuning.
            eval_every=0,
            # pairs='in_batch' only: lay each step's sentences end to end in rows of the
            # largest length bucket (fsl_jax/data/packing.py) instead of padding each
            # one to the bucket of the longest. The loss is the same up to float
            # rounding, with other dropout draws, and an SST-2 step ran 2.2x as fast
            # (docs/benchmarks.md).
            pack=True,
            # pairs='in_batch' only: weight of a cross-entropy term on the classifier's
            # logits added to the pair loss. A weight > 0 also trains the head, which
            # starts from the class means; model.head_init='random' then keeps that
            # head instead of fitting a new one after the stage.
            ce_weight=0.0,
        )
    )


def _check_labels(labels: np.ndarray) -> None:
    classes = np.unique(labels)
    if len(classes) < 2:
        raise ValueError(
            f"Contrastive pairs need at least 2 classes in the train split; it has "
            f"{classes.tolist()}. Set contrastive.enabled=False for this task."
        )


def contrastive_pairs(
    labels: np.ndarray, strategy: str, num_iterations: int, seed: int, epoch: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (rows_a, rows_b, similarity targets) of one epoch's pairs, shuffled.

    See the module docstring for the strategies. Targets are 1.0 for a same-class
    pair and 0.0 otherwise.
    """
    labels = np.asarray(labels)
    _check_labels(labels)
    rng = np.random.default_rng([seed, epoch])
    if num_iterations > 0:
        count = num_iterations * len(labels)
        anchors = rng.integers(len(labels), size=2 * count)
        partners = np.empty_like(anchors)
        for position, anchor in enumerate(anchors):
            same = labels == labels[anchor]
            # Even positions take a partner of the same class, odd positions one of another.
            choices = np.flatnonzero(same if position % 2 == 0 else ~same)
            partners[position] = rng.choice(choices)
        targets = (labels[anchors] == labels[partners]).astype(np.float32)
        return anchors, partners, targets

    if strategy not in PAIR_STRATEGIES:
        raise ValueError(
            f"Unknown contrastive.pairs {strategy!r}; use one of "
            f"{PAIR_STRATEGIES + (IN_BATCH,)} or set contrastive.num_iterations > 0."
        )
    rows_a, rows_b = np.triu_indices(len(labels))
    same = labels[rows_a] == labels[rows_b]
    positives = rng.permutation(np.flatnonzero(same))
    negatives = rng.permutation(np.flatnonzero(~same))
    if strategy == "unique":
        chosen = rng.permutation(np.concatenate([positives, negatives]))
    else:
        size = max(len(positives), len(negatives))
        positives = np.resize(positives, size)
        negatives = np.resize(negatives, size)
        chosen = np.stack([positives, negatives], axis=1).reshape(-1)
    return rows_a[chosen], rows_b[chosen], same[chosen].astype(np.float32)


def num_pairs(labels: np.ndarray, strategy: str, num_iterations: int) -> int:
    """Return the number of pairs per epoch, without drawing them."""
    if num_iterations > 0:
        return 2 * num_iterations * len(labels)
    labels = np.asarray(labels)
    counts = np.unique(labels, return_counts=True)[1]
    positives = int(np.sum(counts * (counts + 1) // 2))
    negatives = len(labels) * (len(labels) + 1) // 2 - positives
    if strategy == "unique":
        return positives + negatives
    return 2 * max(positives, negatives)


def _pad_width(array: np.ndarray, width: int, fill: int) -> np.ndarray:
    if array.shape[1] == width:
        return array
    return np.pad(array, ((0, 0), (0, width - array.shape[1])), constant_values=fill)


def pair_batch(
    encoded: EncodedDataset,
    rows_a: np.ndarray,
    rows_b: np.ndarray,
    targets: np.ndarray,
    batch_size: int,
    buckets: tuple[int, ...],
) -> dict[str, np.ndarray]:
    """Build one batch of sentence pairs; both sides share the smallest bucket that fits both.

    Keys: <token key>_a and <token key>_b for each of input_ids, attention_mask and
    token_type_ids, plus similarity (the target) and example_mask (0.0 on filler rows).
    """
    sides = {
        side: make_batch(encoded, rows, batch_size, buckets)
        for side, rows in zip(SIDES, (rows_a, rows_b))
    }
    width = max(side["input_ids"].shape[1] for side in sides.values())
    fills = {"input_ids": encoded.pad_token_id, "attention_mask": 0, "token_type_ids": 0}
    batch = {}
    for side, values in sides.items():
        for key in TOKEN_KEYS:
            batch[f"{key}_{side}"] = _pad_width(values[key], width, fills[key])
    batch["similarity"] = np.zeros(batch_size, np.float32)
    batch["similarity"][: len(targets)] = targets
    batch["example_mask"] = sides["a"]["example_mask"]
    return batch


def pair_batches(
    encoded: EncodedDataset, section: ml_collections.ConfigDict, buckets, seed: int, epoch: int
) -> Iterator[dict[str, np.ndarray]]:
    """Yield one epoch of pair batches; the last batch is padded with filler rows."""
    rows_a, rows_b, targets = contrastive_pairs(
        encoded.labels, section.pairs, section.num_iterations, seed, epoch
    )
    size = section.batch_size
    for start in range(0, len(targets), size):
        end = start + size
        yield pair_batch(
            encoded, rows_a[start:end], rows_b[start:end], targets[start:end], size, buckets
        )


def in_batch_rows(
    num_examples: int, sentences_per_step: int, seed: int, epoch: int
) -> list[np.ndarray]:
    """Return the example rows of each pairs='in_batch' step of one epoch.

    Every example once, in an order shuffled by (seed, epoch).
    """
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    return [
        order[start : start + sentences_per_step]
        for start in range(0, num_examples, sentences_per_step)
    ]


def in_batch_batches(
    encoded: EncodedDataset, sentences_per_step: int, buckets, seed: int, epoch: int
) -> Iterator[dict[str, np.ndarray]]:
    """Yield one epoch of pairs='in_batch' batches: every example once, shuffled by (seed, epoch).

    The last batch is padded with filler rows when sentences_per_step does not divide
    the number of examples.
    """
    _check_labels(encoded.labels)
    for rows in in_batch_rows(len(encoded), sentences_per_step, seed, epoch):
        yield make_batch(encoded, rows, sentences_per_step, buckets)


def _train_outputs(model: Classifier, params: dict, head: dict, inputs: dict, rng) -> dict:
    """Return the classifier outputs of inputs' rows in train mode (dropout on).

    params["head"], when present (the stage trains it), replaces head.
    """
    packed = {}
    if "segment_ids" in inputs:
        packed = {"segment_ids": inputs["segment_ids"], "num_segments": inputs["labels"].shape[1]}
    outputs = model.apply(
        {"params": {"encoder": params["encoder"], "head": params.get("head", head)}},
        inputs["input_ids"],
        inputs["attention_mask"],
        inputs["token_type_ids"],
        deterministic=False,
        rngs={"dropout": rng},
        **packed,
    )
    return outputs


def _unit(vectors: jax.Array) -> jax.Array:
    # Squared norms are clamped, not norms: a filler row's pooled vector is zero.
    squared_norms = jnp.sum(jnp.square(vectors), axis=-1, keepdims=True)
    return vectors * jax.lax.rsqrt(jnp.maximum(squared_norms, 1e-12))


def in_batch_cosine_loss(model: Classifier, head: dict, ce_weight: float = 0.0) -> Callable:
    """Return loss_fn(params, teacher_params, batch, rng, step) of pairs='in_batch'.

    Scores every pair i < j of real rows in the batch: the squared difference between
    their cosine similarity and the target (1.0 same class, 0.0 otherwise), averaged
    over same-class pairs and over cross-class pairs separately, and the two means
    averaged. A batch without pairs of one kind contributes half a loss. ce_weight > 0
    adds that multiple of the cross-entropy of the classifier's logits, which also
    trains params["head"] when params holds one.
    """

    def loss_fn(params, teacher_params, batch, rng, step):
        del teacher_params, step
        outputs = _train_outputs(model, params, head, batch, rng)
        # A packed batch has [rows, segments] sentence slots; both layouts become a list.
        pooled = outputs["pooled"].reshape(-1, outputs["pooled"].shape[-1])
        logits = outputs["logits"].reshape(-1, outputs["logits"].shape[-1])
        labels = batch["labels"].reshape(-1)
        example_mask = batch["example_mask"].reshape(-1)
        unit = _unit(pooled)
        cosine = unit @ unit.T
        real = example_mask > 0
        size = real.shape[0]
        pairs = jnp.triu(jnp.ones((size, size), bool), k=1) & real[:, None] & real[None, :]
        same = labels[:, None] == labels[None, :]
        squared = jnp.square(cosine - same.astype(cosine.dtype))

        def mean_over(values, select):
            weight = (pairs & select).astype(values.dtype)
            return jnp.sum(values * weight) / jnp.maximum(jnp.sum(weight), 1.0)

        loss = 0.5 * (mean_over(squared, same) + mean_over(squared, ~same))
        metrics = {
            "same_class_cosine": mean_over(cosine, same),
            "cross_class_cosine": mean_over(cosine, ~same),
        }
        if ce_weight:
            cross_entropy = masked_cross_entropy(
                logits, {"labels": labels, "example_mask": example_mask}
            )
            metrics["pair_loss"] = loss
            metrics["cross_entropy"] = cross_entropy
            loss = loss + ce_weight * cross_entropy
        return loss, metrics

    return loss_fn


def cosine_similarity_loss(model: Classifier, head: dict) -> Callable:
    """Return loss_fn(params, teacher_params, batch, rng, step) of the pair stage.

    params contains only the encoder; head (fixed, unused by the loss) completes the
    classifier's params. The loss is the mean squared difference between the cosine
    similarity of a pair's pooled vectors and its target, over real pairs.
    """

    def loss_fn(params, teacher_params, batch, rng, step):
        del teacher_params, step
        inputs = {
            key: jnp.concatenate([batch[f"{key}_a"], batch[f"{key}_b"]], axis=0)
            for key in TOKEN_KEYS
        }
        pooled = _train_outputs(model, params, head, inputs, rng)["pooled"]
        vectors_a, vectors_b = jnp.split(pooled, 2, axis=0)
        dot = jnp.sum(vectors_a * vectors_b, axis=-1)
        # Squared norms are clamped, not norms: a filler row's pooled vector is zero.
        norms = jnp.sum(jnp.square(vectors_a), -1) * jnp.sum(jnp.square(vectors_b), -1)
        cosine = dot * jax.lax.rsqrt(jnp.maximum(norms, 1e-12))
        mask = batch["example_mask"]
        squared = jnp.square(cosine - batch["similarity"])
        loss = jnp.sum(squared * mask) / jnp.maximum(jnp.sum(mask), 1.0)
        return loss, {"mean_cosine": jnp.sum(cosine * mask) / jnp.maximum(jnp.sum(mask), 1.0)}

    return loss_fn


def nearest_mean_metrics(
    pooled_fn: Callable[[Any, EncodedDataset], np.ndarray],
    params: Any,
    train_data: EncodedDataset,
    dev_data: EncodedDataset,
    num_labels: int,
) -> dict[str, float]:
    """Return dev accuracy and macro-F1 of a cosine nearest-class-mean classifier on params."""
    train_vectors = pooled_fn(params, train_data)
    centroids = np.zeros((num_labels, train_vectors.shape[1]), np.float64)
    np.add.at(centroids, train_data.labels, train_vectors)
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    dev_vectors = pooled_fn(params, dev_data)
    predictions = (dev_vectors @ centroids.T).argmax(-1)
    metrics = classification_metrics(predictions, dev_data.labels, num_classes=num_labels)
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}


def fit_contrastive(
    *,
    model: Classifier,
    params: dict,
    section: ml_collections.ConfigDict,
    optimizer_config: ml_collections.ConfigDict,
    train_data: EncodedDataset,
    dev_data: EncodedDataset,
    num_labels: int,
    eval_batch_size: int,
    length_buckets: tuple[int, ...],
    seed: int,
    mesh: Mesh,
    workdir: Path,
    pack_eval: bool = False,
    norm_metrics: bool = False,
    pending_writes: contextlib.ExitStack | None = None,
) -> tuple[dict, dict[str, Any]]:
    """Train params["encoder"] on sentence pairs; return (classifier params, loop record).

    The optimizer is optimizer_config with section's learning rate and warmup. The
    stage checkpoints its final state, so a rerun of a killed job skips a finished
    stage. The returned params keep the input head, which the caller refits, unless
    section.ce_weight > 0: then the head is the one the stage trained. pack_eval
    packs the sentences whose pooled vectors score dev (train.pack_eval), and
    norm_metrics logs the norms of the updates and params (train.norm_metrics). With
    pending_writes, the checkpoint writes may finish after this returns, and the
    stack waits for them when it closes. Without it, they are on disk on return.
    """
    in_batch = section.pairs == IN_BATCH
    if in_batch and section.num_iterations > 0:
        raise ValueError(
            f"contrastive.num_iterations {section.num_iterations} has no effect with "
            f"pairs='{IN_BATCH}', which scores every pair in each batch; set it to 0."
        )
    size_key = "sentences_per_step" if in_batch else "batch_size"
    step_size = section[size_key]
    if step_size % mesh.size:
        raise ValueError(
            f"contrastive.{size_key} {step_size} cannot be split over {mesh.size} "
            f"devices; use a multiple of {mesh.size}."
        )
    if in_batch:
        _check_labels(train_data.labels)
        steps_per_epoch = math.ceil(len(train_data) / step_size)
    else:
        count = num_pairs(train_data.labels, section.pairs, section.num_iterations)
        steps_per_epoch = math.ceil(count / step_size)
    num_steps = steps_per_epoch * section.num_epochs
    stage_optimizer = ml_collections.ConfigDict(optimizer_config.to_dict())
    stage_optimizer.learning_rate = section.learning_rate
    stage_optimizer.warmup_ratio = section.warmup_ratio
    stage_optimizer.warmup_steps = 0
    stage_optimizer.freeze = "none"
    stage_optimizer.layer_decay = 1.0
    stage_optimizer.head_lr_scale = 1.0
    ce_weight = float(section.get("ce_weight", 0.0))
    if ce_weight and not in_batch:
        raise ValueError(
            f"Invalid contrastive.ce_weight {ce_weight} for pairs={section.pairs!r}: the "
            f"cross-entropy term needs pairs='{IN_BATCH}'. Set ce_weight to 0 or use "
            f"pairs='{IN_BATCH}'."
        )
    trainable = {"encoder": params["encoder"]}
    if ce_weight:
        # The stage also trains the head, starting from the class means.
        params = heads.fit_head(
            "prototypes",
            model,
            params,
            train_data,
            num_labels,
            mesh,
            eval_batch_size,
            length_buckets,
            pack=pack_eval,
        )
        trainable["head"] = params["head"]
    head = jax.tree.map(np.asarray, params["head"])
    optimizer, _ = make_optimizer(stage_optimizer, trainable, num_steps, model.config.num_layers)
    state = create_train_state(trainable, optimizer, seed, mesh)
    if in_batch:
        loss_fn = in_batch_cosine_loss(model, head, ce_weight)
    else:
        loss_fn = cosine_similarity_loss(model, head)
    train_step = make_train_step(loss_fn, optimizer, state, mesh, norm_metrics)

    def pooled_fn(encoder_params, encoded):
        full = {"encoder": encoder_params["encoder"], "head": head}
        return heads.pooled_features(
            model, full, encoded, mesh, eval_batch_size, length_buckets, pack_eval
        )

    def evaluate(encoder_params):
        return nearest_mean_metrics(pooled_fn, encoder_params, train_data, dev_data, num_labels)

    packing = in_batch and section.get("pack", False)
    if packing:
        # One packed shape for every step of the stage, so the step compiles once.
        # NOTE: the shape follows the split's sentence lengths, so splits that pack into
        # different row counts compile the step once each (6 to 7 s on 2 CPU cores
        # from an empty compilation cache).
        width = max(length_buckets)
        every_step = [
            rows
            for epoch in range(section.num_epochs)
            for rows in in_batch_rows(len(train_data), step_size, seed, epoch)
        ]
        num_rows, num_segments = packed_shape(train_data.lengths, every_step, width, mesh.size)
        logging.info(
            "contrastive seed %d: %d sentences per step packed into %d rows of %d tokens "
            "(up to %d sentences per row).",
            seed,
            step_size,
            num_rows,
            width,
            num_segments,
        )

    def make_epoch(epoch):
        if packing:
            return (
                make_packed_batch(train_data, rows, width, num_rows, num_segments)
                for rows in in_batch_rows(len(train_data), step_size, seed, epoch)
            )
        if in_batch:
            return in_batch_batches(train_data, step_size, length_buckets, seed, epoch)
        return pair_batches(train_data, section, length_buckets, seed, epoch)

    checkpointer = Checkpointer(workdir / "checkpoints" / f"seed_{seed}" / "contrastive")
    writer = MetricWriter(workdir, "contrastive", seed)
    settings = LoopSettings(
        num_steps=num_steps,
        steps_per_epoch=steps_per_epoch,
        eval_every=section.eval_every,
        # The final state is kept, so a rerun finds the stage finished. It is written in
        # the background after a blocking copy of 0.13 s on 2 CPU cores.
        # NOTE: the state includes both AdamW moments, so it takes about 3x the params
        # on disk (270 MB for MiniLM).
        checkpoint_every=num_steps,
        log_every=10,
    )
    try:
        state, record = train_loop(
            state=state,
            train_step=train_step,
            make_epoch=make_epoch,
            evaluate=evaluate,
            settings=settings,
            mesh=mesh,
            checkpointer=checkpointer,
            writer=writer,
            description=f"contrastive seed {seed}",
        )
    finally:
        writer.close()
    best, best_record = checkpointer.best_params(state.params, num_steps, record)
    checkpointer.close_after(pending_writes)
    logging.info(
        "contrastive seed %d: %d pair steps; nearest-class-mean dev %s at step %d",
        seed,
        num_steps,
        best_record,
        record["best_step"],
    )
    return {**params, **best}, record
