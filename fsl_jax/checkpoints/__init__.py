"""Checkpoint name resolution and Hugging Face import/export."""

from fsl_jax.checkpoints.hf_weights import (
    export_hf,
    load_encoder,
    load_hf_config,
    params_to_state_dict,
    read_state_dict,
    state_dict_to_params,
)
from fsl_jax.checkpoints.resolve import resolve_checkpoint

__all__ = [
    "export_hf",
    "load_encoder",
    "load_hf_config",
    "params_to_state_dict",
    "read_state_dict",
    "resolve_checkpoint",
    "state_dict_to_params",
]
