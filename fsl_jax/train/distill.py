"""Knowledge distillation: students, transfer sets, the fused loss and teacher caches.

The distillation train step runs the teacher forward pass (eval mode, no gradient)
and the student forward pass inside one jitted function, and scores them with the
objective built from `config.distill` (fsl_jax.losses). With a fixed transfer set,
the teacher outputs can instead be computed once and fed in with the batch.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from fsl_jax.checkpoints import load_encoder, resolve_checkpoint
from fsl_jax.data import EncodedDataset
from fsl_jax.losses import DistillationObjective
from fsl_jax.models import Classifier, EncoderConfig, select_layers, uniform_layers
from fsl_jax.train.steps import masked_accuracy

# Prefix of batch keys that carry cached teacher outputs.
CACHE_PREFIX = "teacher_"


def build_student(
    student_config: ml_collections.ConfigDict,
    teacher_config: EncoderConfig,
    teacher_encoder_params: dict,
) -> tuple[EncoderConfig, dict | None]:
    """Return the student's (encoder config, encoder params or None for a fresh init).

    student_config.kind:
      'layers': teacher layers student_config.layers, or student_config.num_layers
        evenly spaced layers, copied from teacher_encoder_params.
      'checkpoint': a separate Hugging Face checkpoint (student_config.checkpoint).
      'fresh': random init with the teacher's vocabulary and the sizes in
        student_config (num_layers, hidden_size, num_heads, intermediate_size).
    """
    kind = student_config.kind
    if kind == "layers":
        layers = list(student_config.get("layers") or ())
        if not layers:
            layers = uniform_layers(teacher_config.num_layers, student_config.num_layers)
        config, params = select_layers(teacher_encoder_params, teacher_config, layers)
        logging.info("Student keeps teacher layers %s.", layers)
        return config, params
    if kind == "checkpoint":
        config, params = load_encoder(resolve_checkpoint(student_config.checkpoint))
        if config.vocab_size != teacher_config.vocab_size:
            raise ValueError(
                f"Student checkpoint {student_config.checkpoint!r} has vocab_size "
                f"{config.vocab_size} but the teacher has {teacher_config.vocab_size}; "
                "teacher and student must share a tokenizer."
            )
        return config, params
    if kind == "fresh":
        config = teacher_config.replace(
            num_layers=student_config.num_layers,
            hidden_size=student_config.get("hidden_size") or teacher_config.hidden_size,
            num_heads=student_config.get("num_heads") or teacher_config.num_heads,
            intermediate_size=(
                student_config.get("intermediate_size") or teacher_config.intermediate_size
            ),
        )
        return config, None
    raise ValueError(
        f"Unknown distill.student.kind {kind!r}; use 'layers', 'checkpoint' or 'fresh'."
    )


def count_params(params: Any) -> int:
    return int(sum(np.size(leaf) for leaf in jax.tree.leaves(params)))


def model_inputs(batch: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array, jax.Array]:
    return batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]


def teacher_outputs_from_cache(batch: Mapping[str, jax.Array]) -> dict[str, Any]:
    """Rebuild the teacher outputs dict from the `teacher_*` keys of a batch."""
    outputs: dict[str, Any] = {}
    for key, value in batch.items():
        if not key.startswith(CACHE_PREFIX):
            continue
        name = key[len(CACHE_PREFIX) :]
        if name.startswith("hidden_states_"):
            outputs.setdefault("hidden_states", {})[int(name.rsplit("_", 1)[1])] = value
        elif name.startswith("attentions_"):
            outputs.setdefault("attentions", {})[int(name.rsplit("_", 1)[1])] = value
        else:
            outputs[name] = value
    for key in ("hidden_states", "attentions"):
        if key in outputs:
            layers = outputs[key]
            outputs[key] = tuple(layers[index] for index in range(len(layers)))
    return outputs


def distillation_loss(
    student: Classifier,
    teacher: Classifier,
    objective: DistillationObjective,
    policy=None,
    token_ids=None,
) -> Callable:
    """Return loss_fn(params, teacher_params, batch, rng, step) for distillation.

    params is {"student": classifier params, "objective": objective params}. The
    teacher runs in eval mode on the same (augmented) inputs as the student, unless
    the batch carries cached teacher outputs (keys starting with `teacher_`).
    """
    from fsl_jax.train import augmentation
    from fsl_jax.train.finetune import apply_model

    required = objective.required_outputs
    extra_outputs = {
        "output_hidden_states": "hidden_states" in required,
        "output_attentions": "attentions" in required,
    }
    augmenting = policy is not None and augmentation.has_device_ops(policy)

    def loss_fn(params, teacher_params, batch, rng, step):
        dropout_rng, augment_rng = jax.random.split(rng)
        inputs, loss_batch, mixing = batch, batch, None
        if augmenting:
            inputs, loss_batch, mixing = augmentation.augment_inputs(
                student,
                params["student"],
                batch,
                augment_rng,
                policy,
                token_ids,
                student.num_labels,
            )
        if any(key.startswith(CACHE_PREFIX) for key in batch):
            if augmenting:
                raise ValueError(
                    "Cached teacher outputs cannot follow on-device augmentation; set "
                    "distill.cache_teacher=False or remove the device operations."
                )
            teacher_out = teacher_outputs_from_cache(batch)
        elif objective.requires_teacher:
            teacher_out = apply_model(
                teacher,
                teacher_params,
                augmentation.teacher_inputs(teacher, teacher_params, inputs, mixing),
                deterministic=True,
                **extra_outputs,
            )
        else:
            teacher_out = None
        student_out = apply_model(
            student,
            params["student"],
            inputs,
            deterministic=False,
            rngs={"dropout": dropout_rng},
            **extra_outputs,
        )
        loss, metrics = objective(
            params.get("objective"), student_out, teacher_out, loss_batch, step
        )
        labelled = {**batch, "example_mask": batch["example_mask"] * batch.get("label_mask", 1.0)}
        metrics["accuracy"] = masked_accuracy(student_out["logits"], labelled)
        return loss, metrics

    return loss_fn


def init_objective_params(
    objective: DistillationObjective,
    student: Classifier,
    student_params: dict,
    teacher: Classifier,
    teacher_params: dict,
    rng: jax.Array,
) -> dict:
    """Create the objective's learned parameters (e.g. hidden-state projections)."""
    required = objective.required_outputs
    ids = jnp.zeros((2, 8), jnp.int32)
    mask = jnp.ones_like(ids)

    def outputs_of(model, params):
        return jax.eval_shape(
            lambda p: model.apply(
                {"params": p},
                ids,
                mask,
                output_hidden_states="hidden_states" in required,
                output_attentions="attentions" in required,
            ),
            params,
        )

    return objective.init(
        rng, outputs_of(student, student_params), outputs_of(teacher, teacher_params)
    )


def concat_transfer_sets(labelled: EncodedDataset, unlabelled: EncodedDataset | None):
    """Join the labelled train set and an unlabelled pool into one transfer set.

    Returns (dataset, label_mask float32 [N]): label_mask is 1 for labelled rows, so
    hard-label terms skip the pool while teacher-based terms use every row.
    """
    if unlabelled is None or len(unlabelled) == 0:
        return labelled, np.ones(len(labelled), np.float32)
    width = max(labelled.max_length, unlabelled.max_length)

    def widen(array, fill):
        pad = width - array.shape[1]
        return np.pad(array, ((0, 0), (0, pad)), constant_values=fill) if pad else array

    joined = dataclasses.replace(
        labelled,
        input_ids=np.concatenate(
            [
                widen(labelled.input_ids, labelled.pad_token_id),
                widen(unlabelled.input_ids, labelled.pad_token_id),
            ]
        ),
        attention_mask=np.concatenate(
            [widen(labelled.attention_mask, 0), widen(unlabelled.attention_mask, 0)]
        ),
        token_type_ids=np.concatenate(
            [widen(labelled.token_type_ids, 0), widen(unlabelled.token_type_ids, 0)]
        ),
        lengths=np.concatenate([labelled.lengths, unlabelled.lengths]),
        labels=np.concatenate([labelled.labels, np.zeros(len(unlabelled), np.int32)]),
        soft_labels=None,
        name=f"{labelled.name}+{unlabelled.name}",
    )
    label_mask = np.concatenate(
        [np.ones(len(labelled), np.float32), np.zeros(len(unlabelled), np.float32)]
    )
    return joined, label_mask


def add_per_example(batches: Iterator[dict], arrays: Mapping[str, np.ndarray]) -> Iterator[dict]:
    """Add per-example arrays to each batch, gathered by example_index.

    Arrays named like hidden states ([N, T_max, H]) are cut to the batch's length on
    the token axis. Attention maps ([N, heads, T_max, T_max]) are cut on both token
    axes. Padding rows get zeros.
    """
    for batch in batches:
        index = batch["example_index"]
        length = batch["input_ids"].shape[1]
        rows = np.maximum(index, 0)
        real = (index >= 0).astype(np.float32)
        extra = {}
        for name, array in arrays.items():
            values = array[rows]
            if "attentions" in name:
                values = values[:, :, :length, :length]
            elif "hidden" in name:
                values = values[:, :length]
            shape = (-1,) + (1,) * (values.ndim - 1)
            extra[name] = (values * real.reshape(shape)).astype(array.dtype)
        yield {**batch, **extra}


def teacher_cache(
    teacher: Classifier,
    teacher_params: dict,
    transfer: EncodedDataset,
    objective: DistillationObjective,
    settings,
    mesh,
    max_bytes: int = 2 << 30,
) -> dict[str, np.ndarray]:
    """Compute the teacher outputs the objective reads, once for the whole transfer set.

    Returns per-example arrays named `teacher_<output>` (hidden states and attention
    maps one array per layer, padded to the dataset width) for add_per_example. The
    teacher runs in eval mode, so the values equal the fused path's up to float
    rounding from different padding lengths.

    Raises:
      ValueError: the cache would exceed max_bytes; use the fused path instead.
    """
    from fsl_jax.train.finetune import eval_batches
    from fsl_jax.train.predict import predict_outputs
    from fsl_jax.train.steps import make_eval_step

    required = objective.required_outputs
    config = teacher.config
    rows, width = len(transfer), transfer.max_length
    keys = ["logits", "pooled"]
    if any(term.spec.fn.__name__.startswith("cosine") for term in objective.terms):
        keys.append("last_hidden_state")
    if "hidden_states" in required:
        keys += [f"hidden_states_{layer}" for layer in range(config.num_layers + 1)]
    if "attentions" in required:
        keys += [f"attentions_{layer}" for layer in range(config.num_layers)]
    per_row = {
        "logits": teacher.num_labels,
        "pooled": config.hidden_size,
        "last_hidden_state": width * config.hidden_size,
    }
    size = (
        4
        * rows
        * sum(
            per_row.get(key)
            or (
                width * config.hidden_size
                if key.startswith("hidden")
                else config.num_heads * width**2
            )
            for key in keys
        )
    )
    if size > max_bytes:
        raise ValueError(
            f"Caching teacher outputs {keys} for {rows} rows needs {size / 2**30:.1f} GiB, more "
            f"than the {max_bytes / 2**30:.1f} GiB limit; set distill.cache_teacher=False to run "
            "the teacher inside the train step instead."
        )

    def apply(params, batch):
        outputs = teacher.apply(
            {"params": params},
            batch["input_ids"],
            batch["attention_mask"],
            batch["token_type_ids"],
            deterministic=True,
            output_hidden_states="hidden_states" in required,
            output_attentions="attentions" in required,
        )
        flat = {"logits": outputs["logits"], "pooled": outputs["pooled"]}
        flat["last_hidden_state"] = outputs["last_hidden_state"]
        for layer, value in enumerate(outputs.get("hidden_states", ())):
            flat[f"hidden_states_{layer}"] = value
        for layer, value in enumerate(outputs.get("attentions", ())):
            flat[f"attentions_{layer}"] = value
        # Pad token axes to the dataset width so every batch stacks into one array.
        length = batch["input_ids"].shape[1]
        for key, value in flat.items():
            if key.startswith("attentions"):
                flat[key] = jnp.pad(
                    value, ((0, 0), (0, 0), (0, width - length), (0, width - length))
                )
            elif key.startswith("hidden") or key == "last_hidden_state":
                flat[key] = jnp.pad(value, ((0, 0), (0, width - length), (0, 0)))
        return flat

    eval_step = make_eval_step(apply, teacher_params, mesh, output_keys=tuple(keys))
    batches = eval_batches(transfer, settings.eval_batch_size, settings.length_buckets, mesh.size)
    outputs = predict_outputs(eval_step, teacher_params, batches, mesh, rows, key=keys)
    cache = {CACHE_PREFIX + key: value for key, value in outputs.items()}
    logging.info("Cached teacher outputs %s for %d rows (%.1f MiB).", keys, rows, size / 2**20)
    return cache
