"""Compiling ahead of time on a background thread: later calls must not compile again."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from train_jobs import load_sst2, tiny_classifier

from configs import sst2_finetune
from fsl_jax.train import finetune, heads
from fsl_jax.train.ahead import AheadOfTimeCompiler
from fsl_jax.train.mesh import make_mesh, replicate_tree

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_COMPILED: list[str] = []


def _record_compile(event: str, duration: float, **kwargs) -> None:
    if event == BACKEND_COMPILE_EVENT:
        _COMPILED.append(kwargs.get("fun_name", "?"))


jax.monitoring.register_event_duration_secs_listener(_record_compile)


def _run_listing_compiles(function, *args, **kwargs):
    """Return (function's result, names of the jitted functions XLA compiled meanwhile)."""
    start = len(_COMPILED)
    result = jax.block_until_ready(function(*args, **kwargs))
    return result, _COMPILED[start:]


def _large_compiles(names: list[str]) -> list[str]:
    """Return names without the one-op programs of host-to-device conversions."""
    one_op = ("jit(convert_element_type)", "jit(broadcast_in_dim)")
    return [name for name in names if name not in one_op]


def test_compiled_ahead_call_skips_compile():
    square_sum = jax.jit(lambda x: jnp.sum(x @ x.T))
    with AheadOfTimeCompiler() as compiler:
        compiler.submit(square_sum, jax.ShapeDtypeStruct((8, 16), jnp.float32))
    _, compiled = _run_listing_compiles(square_sum, np.ones((8, 16), np.float32))
    assert compiled == []
    # Another shape was not compiled ahead, so this call compiles it.
    _, compiled = _run_listing_compiles(square_sum, np.ones((4, 16), np.float32))
    assert len(compiled) == 1


def test_failed_compile_ahead_is_logged(caplog):
    matmul = jax.jit(lambda x: x @ x)
    with caplog.at_level(logging.WARNING), AheadOfTimeCompiler() as compiler:
        # A [2, 3] @ [2, 3] product is invalid: tracing raises on the background thread.
        compiler.submit(matmul, jax.ShapeDtypeStruct((2, 3), jnp.float32))
    assert "ahead of its first call failed" in caplog.text
    with pytest.raises(TypeError):
        matmul(np.ones((2, 3), np.float32))


def test_later_stages_use_compiled_ahead(data_dir, minilm_dir):
    model, params = tiny_classifier(num_layers=1)
    splits = load_sst2(data_dir, minilm_dir, max_length=64)
    mesh = make_mesh(2)
    config = sst2_finetune.get_config()
    assert config.train.pack_eval
    settings = finetune.TrainSettings.from_config(config.train, len(splits["train"]), mesh)
    num_labels = model.num_labels
    with AheadOfTimeCompiler() as compiler:
        finetune.compile_eval_step(
            compiler, model, params, [splits["train"], splits["dev"]], settings, mesh
        )
        heads.compile_logistic_fit(
            compiler, len(splits["train"]), model.config.hidden_size, num_labels
        )
        finetune.compile_eval_step(compiler, model, params, [splits["test"]], settings, mesh)

    # The calls the teacher makes after the pair stage, with host or replicated params.
    fitted_params, compiled = _run_listing_compiles(
        heads.fit_head,
        "logistic",
        model,
        params,
        splits["train"],
        num_labels,
        mesh,
        settings.eval_batch_size,
        settings.length_buckets,
        pack=True,
    )
    assert _large_compiles(compiled) == []
    on_mesh = replicate_tree(fitted_params, mesh)
    eval_step = finetune.classifier_eval_step(model, on_mesh, mesh)
    for name in ("dev", "test"):
        _, compiled = _run_listing_compiles(
            finetune.evaluate_split, eval_step, on_mesh, splits[name], settings, mesh, num_labels
        )
        assert _large_compiles(compiled) == [], name
