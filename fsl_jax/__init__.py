"""fsl_jax: few-shot text classification and knowledge distillation in JAX/Flax."""

__version__ = "0.1.0"
