"""optax optimizer for fine-tuning: AdamW, schedules, clipping, layer decay, freezing."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import optax
from absl import logging

FREEZE_PRESETS = ("none", "linear_probe", "embeddings", "lower_<N>")


def _path_names(path) -> tuple[str, ...]:
    return tuple(str(getattr(entry, "key", getattr(entry, "name", entry))) for entry in path)


def decay_mask(params: Any) -> Any:
    """Return True for parameters that get weight decay: all but biases and LayerNorm."""

    def decays(path, leaf):
        names = _path_names(path)
        return names[-1] not in ("bias", "scale") and leaf.ndim > 1

    return jax.tree_util.tree_map_with_path(decays, params)


def layer_depth(names: tuple[str, ...], num_layers: int) -> int:
    """Return a parameter's depth: 0 for embeddings, i + 1 for layer_i, L + 1 above."""
    for name in names:
        match = re.fullmatch(r"layer_(\d+)", name)
        if match:
            return int(match.group(1)) + 1
        if name == "embeddings":
            return 0
    return num_layers + 1


def freeze_labels(params: Any, preset: str, num_layers: int) -> Any:
    """Label each parameter 'train' or 'frozen' for a freezing preset.

    Presets: 'none'; 'linear_probe' (only parameters outside the encoder train);
    'embeddings' (embedding tables and their LayerNorm frozen); 'lower_<N>'
    (embeddings and encoder layers 0..N-1 frozen).
    """
    lower = re.fullmatch(r"lower_(\d+)", preset)
    if preset not in ("none", "linear_probe", "embeddings") and not lower:
        raise ValueError(f"Unknown freeze preset {preset!r}; use one of {FREEZE_PRESETS}.")
    if lower and int(lower.group(1)) > num_layers:
        raise ValueError(
            f"Freeze preset {preset!r} freezes more layers than the encoder has ({num_layers})."
        )

    def label(path, _):
        names = _path_names(path)
        in_encoder = "encoder" in names
        depth = layer_depth(names, num_layers)
        if preset == "linear_probe":
            frozen = in_encoder
        elif preset == "embeddings":
            frozen = in_encoder and depth == 0
        elif lower:
            frozen = in_encoder and depth <= int(lower.group(1))
        else:
            frozen = False
        return "frozen" if frozen else "train"

    return jax.tree_util.tree_map_with_path(label, params)


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Return warmup then linear, cosine or constant decay over total_steps optimizer steps."""
    peak = config.learning_rate
    warmup = int(
        config.get("warmup_steps", 0) or round(config.get("warmup_ratio", 0.0) * total_steps)
    )
    warmup = min(warmup, total_steps)
    decay_steps = max(total_steps - warmup, 1)
    kind = config.get("schedule", "linear")
    if kind == "linear":
        decay = optax.linear_schedule(peak, peak * config.get("end_factor", 0.0), decay_steps)
    elif kind == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=config.get("end_factor", 0.0))
    elif kind == "constant":
        decay = optax.constant_schedule(peak)
    else:
        raise ValueError(f"Unknown schedule {kind!r}; use 'linear', 'cosine' or 'constant'.")
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def _scale_by_path(factor: Callable[[tuple[str, ...]], float]) -> optax.GradientTransformation:
    """Multiply each update by factor(names on its path), a fixed per-parameter factor.

    The factor is looked up from each update's own path rather than from a tree
    built in advance, because optax.multi_transform (the freeze presets) hands the
    inner chain a tree whose frozen leaves are replaced by MaskedNode.
    """

    def init(_):
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        scaled = jax.tree_util.tree_map_with_path(
            lambda path, update: update * factor(_path_names(path)), updates
        )
        return scaled, state

    return optax.GradientTransformation(init, update)


def make_optimizer(
    config: ml_collections.ConfigDict, params: Any, total_steps: int, num_layers: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Build the optimizer named by config (the `optimizer` section of a run config).

    total_steps counts train steps. With accumulate_steps=k, optimizer updates
    happen every k train steps, so the schedule (and warmup_ratio) spans
    ceil(total_steps / k) updates. Keys: learning_rate, weight_decay, schedule,
    warmup_steps or warmup_ratio, end_factor, clip_norm, accumulate_steps,
    layer_decay, head_lr_scale, freeze, b1, b2, eps. warmup_steps also counts
    optimizer updates. Returns (optimizer, schedule of the update count).
    """
    accumulate = config.get("accumulate_steps", 1)
    schedule = learning_rate_schedule(config, math.ceil(total_steps / max(accumulate, 1)))
    transforms = []
    if config.get("clip_norm", 0.0):
        transforms.append(optax.clip_by_global_norm(config.clip_norm))
    transforms.append(
        optax.adamw(
            schedule,
            b1=config.get("b1", 0.9),
            b2=config.get("b2", 0.999),
            eps=config.get("eps", 1e-6),
            weight_decay=config.get("weight_decay", 0.01),
            mask=decay_mask,
        )
    )

    layer_decay = config.get("layer_decay", 1.0)
    head_lr_scale = config.get("head_lr_scale", 1.0)
    if layer_decay != 1.0 or head_lr_scale != 1.0:

        def factor(names):
            if "encoder" not in names:
                return head_lr_scale
            return layer_decay ** (num_layers + 1 - layer_depth(names, num_layers))

        transforms.append(_scale_by_path(factor))

    optimizer = optax.chain(*transforms)
    preset = config.get("freeze", "none")
    if preset != "none":
        labels = freeze_labels(params, preset, num_layers)
        trained = sum(label == "train" for label in jax.tree.leaves(labels))
        logging.info("Freeze preset %s: %d parameter arrays train.", preset, trained)
        optimizer = optax.multi_transform(
            {"train": optimizer, "frozen": optax.set_to_zero()}, labels
        )
    if accumulate > 1:
        optimizer = optax.MultiSteps(optimizer, every_k_schedule=accumulate)
    return optimizer, schedule
