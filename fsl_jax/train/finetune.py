"""Fine-tune a classifier on one split: model construction, loss, train and evaluate."""

from __future__ import annotations

import contextlib
import dataclasses
import math
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh

from fsl_jax.data import (
    EncodedDataset,
    batch_iterator,
    epoch_order,
    make_batch,
    make_packed_batch,
    num_batches,
    packed_eval_batches,
    packed_shape,
)
from fsl_jax.evaluate.metrics import classification_metrics
from fsl_jax.models import Classifier, EncoderConfig
from fsl_jax.train import augmentation
from fsl_jax.train.ahead import AheadOfTimeCompiler, abstract
from fsl_jax.train.checkpointing import Checkpointer
from fsl_jax.train.loop import LoopSettings, train_loop
from fsl_jax.train.mesh import data_sharded, replicated
from fsl_jax.train.optimizer import make_optimizer
from fsl_jax.train.predict import predict_outputs
from fsl_jax.train.state import create_train_state
from fsl_jax.train.steps import (
    make_eval_step,
    make_train_step,
    masked_accuracy,
    masked_cross_entropy,
)
from fsl_jax.train.writers import MetricWriter


def build_classifier(
    model_config: ml_collections.ConfigDict, encoder_config: EncoderConfig, num_labels: int
) -> Classifier:
    """Return the Classifier that the `model` section of a run config describes."""
    encoder_config = encoder_config.replace(
        dtype=model_config.get("dtype", "float32"),
        hidden_dropout=model_config.get("hidden_dropout", encoder_config.hidden_dropout),
        attention_dropout=model_config.get("attention_dropout", encoder_config.attention_dropout),
    )
    return Classifier(
        encoder_config,
        num_labels=num_labels,
        pooling=model_config.pooling,
        normalize=model_config.get("normalize", False),
        head_scale=model_config.get("head_scale", 1.0),
        classifier_dropout=model_config.get("classifier_dropout", 0.1),
    )


def init_params(model: Classifier, encoder_params: dict | None, rng: jax.Array) -> dict:
    """Initialise the classifier; the encoder part is replaced by encoder_params if given.

    A pooler in encoder_params that the model does not use is left out. With
    encoder_params, only the other parameters (the head) are computed: the compiled
    program returns no encoder arrays, so XLA drops the encoder's random init and
    compiles a small program (docs/benchmarks.md has the times). Linen derives each
    parameter from rng and its module path, so the head equals a full init's.
    """
    ids = jnp.zeros((1, 8), jnp.int32)

    def init(key):
        params = model.init(key, ids, jnp.ones_like(ids))["params"]
        if encoder_params is None:
            return params
        return {name: value for name, value in params.items() if name != "encoder"}

    params = jax.tree.map(np.asarray, jax.jit(init)(rng))
    if encoder_params is not None:
        shapes = jax.eval_shape(model.init, rng, ids, jnp.ones_like(ids))["params"]["encoder"]
        params["encoder"] = {key: encoder_params[key] for key in shapes}
    return params


def _packing_arguments(batch: dict) -> dict:
    """Return the model's packing arguments for a packed batch, {} for a padded one."""
    if "segment_ids" not in batch:
        return {}
    return {"segment_ids": batch["segment_ids"], "num_segments": batch["example_mask"].shape[1]}


def apply_model(model: Classifier, params, inputs: dict, **kwargs) -> dict:
    """Run model on a dict of inputs (ids, masks and optional embedding inputs).

    A packed batch (with segment_ids) gives outputs per sentence slot, [rows, slots, ...].
    """
    return model.apply(
        {"params": params},
        inputs["input_ids"],
        inputs["attention_mask"],
        inputs["token_type_ids"],
        inputs_embeds=inputs.get("inputs_embeds"),
        embedding_scale=inputs.get("embedding_scale"),
        **_packing_arguments(inputs),
        **kwargs,
    )


def classification_loss(model: Classifier, policy=None, token_ids=None) -> Callable:
    """Return loss_fn(params, teacher_params, batch, rng, step) for fine-tuning.

    With an augmentation policy that names device operations (cutoff, mixup), they
    are applied to each batch inside the step, with keys split from rng. Packed
    batches (train.pack) take no device operations, because those act on whole rows.
    """
    augmenting = policy is not None and augmentation.has_device_ops(policy)

    def loss_fn(params, teacher_params, batch, rng, step):
        del teacher_params, step
        dropout_rng, augment_rng = jax.random.split(rng)
        inputs, loss_batch = batch, batch
        if augmenting:
            inputs, loss_batch, _ = augmentation.augment_inputs(
                model, params, batch, augment_rng, policy, token_ids, model.num_labels
            )
        outputs = apply_model(
            model, params, inputs, deterministic=False, rngs={"dropout": dropout_rng}
        )
        loss = masked_cross_entropy(outputs["logits"], loss_batch)
        return loss, {"accuracy": masked_accuracy(outputs["logits"], batch)}

    return loss_fn


def eval_apply(model: Classifier) -> Callable[[Any, dict], dict]:
    """Return apply(params, batch) in eval mode, for padded and packed batches alike."""

    def apply(params, batch):
        return model.apply(
            {"params": params},
            batch["input_ids"],
            batch["attention_mask"],
            batch["token_type_ids"],
            deterministic=True,
            **_packing_arguments(batch),
        )

    return apply


# One jitted eval step per (model, mesh, param shardings), shared by every caller.
# NOTE: entries are never evicted; a process that builds many distinct models keeps
# every one's compiled executables in memory.
_CLASSIFIER_EVAL_STEPS: dict[tuple, Callable] = {}


def classifier_eval_step(model: Classifier, params: Any, mesh: Mesh) -> Callable:
    """Return the shared jitted eval step of model, with outputs 'logits' and 'pooled'.

    The pair stage, the head fit, dev and test evaluation (and every later seed)
    call the same jitted function, so JAX traces the model and loads each compiled
    shape once per process instead of once per caller.
    """
    shardings = jax.tree.map(lambda leaf: getattr(leaf, "sharding", replicated(mesh)), params)
    leaves, treedef = jax.tree.flatten(shardings)
    key = (model, mesh, treedef, tuple(leaves))
    if key not in _CLASSIFIER_EVAL_STEPS:
        _CLASSIFIER_EVAL_STEPS[key] = make_eval_step(
            eval_apply(model), params, mesh, output_keys=("logits", "pooled")
        )
    return _CLASSIFIER_EVAL_STEPS[key]


def compile_eval_step(
    compiler: AheadOfTimeCompiler,
    model: Classifier,
    params: Any,
    datasets: Sequence[EncodedDataset],
    settings: TrainSettings,
    mesh: Mesh,
) -> None:
    """Submit compilations of classifier_eval_step for every eval batch shape of datasets.

    The shapes are those of eval_batches with settings' batch size, buckets and
    packing. params (arrays or shapes) are taken as replicated, because the callers
    of classifier_eval_step pass them replicated.
    """
    params = abstract(params, replicated(mesh))
    eval_step = classifier_eval_step(model, params, mesh)
    batches = {}
    for encoded in datasets:
        for batch in eval_batches(
            encoded,
            settings.eval_batch_size,
            settings.length_buckets,
            mesh.size,
            settings.pack_eval,
        ):
            signature = tuple((key, value.shape, value.dtype.str) for key, value in batch.items())
            batches.setdefault(signature, batch)
    for batch in batches.values():
        compiler.submit(eval_step, params, abstract(batch, data_sharded(mesh)))


def eval_batches(
    encoded: EncodedDataset,
    batch_size: int,
    length_buckets: tuple[int, ...],
    num_devices: int,
    pack: bool = False,
):
    """Yield eval batches over every example, shortest rows first.

    Sorting by length puts rows of similar length together, so most batches fit a
    short length bucket; results go back to dataset order through example_index.
    With pack, sentences share rows of the largest bucket instead, batch_size rows
    per batch (data_lib.packed_eval_batches), and every batch has one shape.
    """
    if pack:
        yield from packed_eval_batches(encoded, batch_size, max(length_buckets), num_devices)
        return
    batch_size = math.ceil(batch_size / num_devices) * num_devices
    order = np.argsort(encoded.lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        yield make_batch(encoded, order[start : start + batch_size], batch_size, length_buckets)


def evaluate_split(
    eval_step, params, encoded: EncodedDataset, settings, mesh: Mesh, num_labels: int
) -> tuple[dict[str, float], np.ndarray]:
    """Return (accuracy, macro-F1 and count over every example, logits [N, C])."""
    batches = eval_batches(
        encoded, settings.eval_batch_size, settings.length_buckets, mesh.size, settings.pack_eval
    )
    logits = predict_outputs(eval_step, params, batches, mesh, len(encoded))
    metrics = classification_metrics(logits.argmax(-1), encoded.labels, num_classes=num_labels)
    return metrics, logits


@dataclasses.dataclass
class TrainSettings:
    """The `train` section of a run config, resolved for one dataset."""

    batch_size: int
    eval_batch_size: int
    length_buckets: tuple[int, ...]
    num_steps: int
    steps_per_epoch: int
    eval_every: int
    checkpoint_every: int
    keep_checkpoints: int
    log_every: int
    stop_after: int | None
    eval_at_start: bool
    pack_eval: bool = False
    norm_metrics: bool = False
    pack: bool = False

    @classmethod
    def from_config(cls, train: ml_collections.ConfigDict, num_examples: int, mesh: Mesh):
        batch_size = train.batch_size
        # Without training (train.enabled=False) only the eval settings are used.
        if train.get("enabled", True) and batch_size % mesh.size:
            raise ValueError(
                f"train.batch_size {batch_size} cannot be split over {mesh.size} devices; use a "
                f"multiple of {mesh.size}."
            )
        steps_per_epoch = num_batches(num_examples, batch_size)
        num_steps = train.num_steps or train.num_epochs * steps_per_epoch
        eval_batch_size = math.ceil(train.eval_batch_size / mesh.size) * mesh.size
        return cls(
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            length_buckets=tuple(train.length_buckets),
            num_steps=num_steps,
            steps_per_epoch=steps_per_epoch,
            eval_every=train.eval_every,
            checkpoint_every=train.checkpoint_every,
            keep_checkpoints=train.get("keep_checkpoints", 1),
            log_every=train.log_every,
            stop_after=train.get("stop_after") or None,
            eval_at_start=train.get("eval_at_start", False),
            pack_eval=train.get("pack_eval", False),
            norm_metrics=train.get("norm_metrics", False),
            pack=train.get("pack", False),
        )


def packed_train_epochs(
    encoded: EncodedDataset, settings: TrainSettings, seed: int, num_devices: int
) -> tuple[Callable[[int], Iterator[dict]], tuple[int, int, int]]:
    """Return (make_epoch, (rows, width, slots)) for packed train batches (train.pack).

    make_epoch(epoch) yields, for each step, the examples batch_iterator would put
    in its batch (same shuffle and order), laid end to end in rows of the largest
    length bucket. One [rows, width] shape with `slots` sentences per row fits
    every step of the run, so the train step compiles once.
    """
    width = max(settings.length_buckets)
    batch_size = settings.batch_size

    def step_rows(epoch: int) -> list[np.ndarray]:
        order = epoch_order(len(encoded), seed, epoch, shuffle=True)
        return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]

    num_epochs = math.ceil(settings.num_steps / settings.steps_per_epoch)
    every_step = [rows for epoch in range(num_epochs) for rows in step_rows(epoch)]
    num_rows, num_segments = packed_shape(encoded.lengths, every_step, width, num_devices)

    def make_epoch(epoch: int) -> Iterator[dict]:
        for rows in step_rows(epoch):
            yield make_packed_batch(encoded, rows, width, num_rows, num_segments)

    return make_epoch, (num_rows, width, num_segments)


def fit_and_select(
    *,
    name: str,
    seed: int,
    params: Any,
    loss_fn: Callable,
    eval_fn: Callable[[Any, dict], dict],
    train_data: EncodedDataset,
    dev_data: EncodedDataset,
    num_labels: int,
    optimizer_config: ml_collections.ConfigDict,
    train_config: ml_collections.ConfigDict,
    num_layers: int,
    mesh: Mesh,
    workdir: Path,
    teacher_params: Any = None,
    make_epoch: Callable[[int], Any] | None = None,
    select_params: Callable[[Any], Any] = lambda params: params,
) -> tuple[Any, dict[str, Any], Checkpointer]:
    """Train params on train_data, evaluate on dev_data, and return the best params on dev.

    loss_fn follows fsl_jax.train.steps; eval_fn(model_params, batch) returns outputs
    with logits. select_params maps the trained params to what eval_fn takes (the
    student inside a distillation params tree). Returns (best params, loop record,
    checkpointer). Closing the checkpointer waits for its writes still in flight.
    """
    settings = TrainSettings.from_config(train_config, len(train_data), mesh)
    optimizer, _ = make_optimizer(optimizer_config, params, settings.num_steps, num_layers)
    state = create_train_state(params, optimizer, seed, mesh, teacher_params=teacher_params)
    train_step = make_train_step(loss_fn, optimizer, state, mesh, settings.norm_metrics)
    model_params = select_params(state.params)
    eval_step = make_eval_step(eval_fn, model_params, mesh)

    if make_epoch is None and settings.pack:
        make_epoch, (rows, width, slots) = packed_train_epochs(
            train_data, settings, seed, mesh.size
        )
        logging.info(
            "%s seed %d: %d sentences per step packed into %d rows of %d tokens "
            "(up to %d sentences per row).",
            name,
            seed,
            settings.batch_size,
            rows,
            width,
            slots,
        )
    if make_epoch is None:

        def make_epoch(epoch):
            return batch_iterator(
                train_data,
                settings.batch_size,
                settings.length_buckets,
                shuffle=True,
                seed=seed,
                epoch=epoch,
                num_devices=mesh.size,
            )

    def evaluate(params):
        metrics, _ = evaluate_split(
            eval_step, select_params(params), dev_data, settings, mesh, num_labels
        )
        return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}

    checkpointer = Checkpointer(
        workdir / "checkpoints" / f"seed_{seed}" / name, settings.keep_checkpoints
    )
    writer = MetricWriter(workdir, name, seed)
    loop_settings = LoopSettings(
        num_steps=settings.num_steps,
        steps_per_epoch=settings.steps_per_epoch,
        eval_every=settings.eval_every,
        checkpoint_every=settings.checkpoint_every,
        log_every=settings.log_every,
        stop_after=settings.stop_after,
        eval_at_start=settings.eval_at_start,
    )
    try:
        state, record = train_loop(
            state=state,
            train_step=train_step,
            make_epoch=make_epoch,
            evaluate=evaluate,
            settings=loop_settings,
            mesh=mesh,
            checkpointer=checkpointer,
            writer=writer,
            description=f"{name} seed {seed}",
        )
    finally:
        writer.close()
    if settings.stop_after is not None and int(jax.device_get(state.step)) < settings.num_steps:
        return None, record, checkpointer
    best_params, best_record = checkpointer.best_params(state.params, settings.num_steps, record)
    logging.info("%s seed %d: best dev %s at step %d", name, seed, best_record, record["best_step"])
    return best_params, record, checkpointer


def keep_without_training(
    *,
    name: str,
    seed: int,
    params: Any,
    model: Classifier,
    train_size: int,
    dev_data: EncodedDataset,
    num_labels: int,
    train_config: ml_collections.ConfigDict,
    mesh: Mesh,
    workdir: Path,
    pending_writes: contextlib.ExitStack | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Score params on dev and keep them as the best checkpoint at step 0, untrained.

    For train.enabled=False: the model is the pair stage's encoder with a fitted head.
    The checkpoint and loop record have the layout fit_and_select writes, so a
    distillation run can reuse the model as its teacher. Returns (params, record).
    With pending_writes, the stack waits for the checkpoint write when it closes.
    Without it, the checkpoint is on disk on return.
    """
    # Only the eval batch size and buckets are used.
    settings = TrainSettings.from_config(train_config, train_size, mesh)
    params = jax.device_put(params, replicated(mesh))
    eval_step = classifier_eval_step(model, params, mesh)
    metrics, _ = evaluate_split(eval_step, params, dev_data, settings, mesh, num_labels)
    dev = {"accuracy": float(metrics["accuracy"]), "macro_f1": float(metrics["macro_f1"])}
    checkpointer = Checkpointer(workdir / "checkpoints" / f"seed_{seed}" / name, 1)
    checkpointer.save_best(0, params, {"step": 0, **dev})
    checkpointer.close_after(pending_writes)
    writer = MetricWriter(workdir, name, seed)
    try:
        writer.write(0, {f"dev_{key}": value for key, value in dev.items()})
    finally:
        writer.close()
    logging.info("%s seed %d: no fine-tuning (train.enabled=False); dev %s", name, seed, dev)
    return params, {"best_step": 0, "best_dev": dev, "history": [{"step": 0, **dev}]}
