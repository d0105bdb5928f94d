"""Loss terms for fine-tuning and distillation, and the objective that composes them."""

# Importing terms registers the built-in terms in LOSS_TERMS.
from fsl_jax.losses import terms
from fsl_jax.losses.layer_map import LAYER_MAP_STRATEGIES, map_layers
from fsl_jax.losses.objective import ActiveTerm, DistillationObjective, build_objective
from fsl_jax.losses.registry import LOSS_TERMS, OPTIONAL_OUTPUTS, TermSpec, register_term
from fsl_jax.losses.schedules import SCHEDULE_KINDS, Schedule, parse_schedule

__all__ = [
    "LAYER_MAP_STRATEGIES",
    "LOSS_TERMS",
    "OPTIONAL_OUTPUTS",
    "SCHEDULE_KINDS",
    "ActiveTerm",
    "DistillationObjective",
    "Schedule",
    "TermSpec",
    "build_objective",
    "map_layers",
    "parse_schedule",
    "register_term",
    "terms",
]
