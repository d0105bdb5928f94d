"""Encoders, classification heads and student construction."""

from fsl_jax.models.bert import Encoder, position_ids_from_mask
from fsl_jax.models.classifier import POOLING_MODES, Classifier, masked_mean, pool
from fsl_jax.models.config import EncoderConfig
from fsl_jax.models.student import select_layers, uniform_layers

__all__ = [
    "Classifier",
    "Encoder",
    "EncoderConfig",
    "POOLING_MODES",
    "masked_mean",
    "pool",
    "position_ids_from_mask",
    "select_layers",
    "uniform_layers",
]
