"""Student construction: keep a subset of teacher layers, as DistilBERT initialises."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np

from fsl_jax.models.config import EncoderConfig


def uniform_layers(num_teacher_layers: int, num_student_layers: int) -> list[int]:
    """Return evenly spaced teacher layers that include the first and the last.

    For example 6 -> 3 gives [0, 2, 5] and 6 -> 2 gives [0, 5].
    """
    if not 1 <= num_student_layers <= num_teacher_layers:
        raise ValueError(
            f"num_student_layers must be between 1 and {num_teacher_layers}, got "
            f"{num_student_layers}."
        )
    if num_student_layers == 1:
        return [num_teacher_layers - 1]
    step = (num_teacher_layers - 1) / (num_student_layers - 1)
    return [round(index * step) for index in range(num_student_layers)]


def select_layers(
    encoder_params: dict[str, Any], config: EncoderConfig, layers: Sequence[int]
) -> tuple[EncoderConfig, dict[str, Any]]:
    """Return a student (config, encoder params) made of the given teacher layers.

    Embeddings and pooler come from the teacher, and teacher layer layers[i] becomes
    student layer i. Arrays are copied to host memory.
    """
    layers = [int(layer) for layer in layers]
    if not layers:
        raise ValueError("layers is empty; name at least one teacher layer to keep.")
    invalid = [layer for layer in layers if not 0 <= layer < config.num_layers]
    if invalid:
        raise ValueError(
            f"Teacher layers {invalid} do not exist; the teacher has layers 0 to "
            f"{config.num_layers - 1}."
        )
    if len(set(layers)) != len(layers):
        raise ValueError(f"Teacher layers {layers} repeat a layer; list each at most once.")
    student = {key: value for key, value in encoder_params.items() if not key.startswith("layer_")}
    for new_index, old_index in enumerate(layers):
        student[f"layer_{new_index}"] = encoder_params[f"layer_{old_index}"]
    return config.replace(num_layers=len(layers)), student
