"""Compile jitted functions ahead of their first call, on a background thread.

XLA compiles a program on one CPU thread. While the pair stage's train step
compiles (about 6 s on 2 CPU cores), the programs of the later stages (the eval
step for each batch shape, the logistic-regression fit) can compile on another
core. `jitted.lower(*args).compile()` fills the same in-memory cache that a call
of `jitted` reads (jax 0.10), so the later call runs without compiling again.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, Callable

import jax
from absl import logging


def abstract(tree: Any, sharding: Any = None) -> Any:
    """Return jax.ShapeDtypeStruct leaves for tree's arrays, with sharding when given."""
    return jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding), tree
    )


class AheadOfTimeCompiler:
    """Compile jitted functions for given argument shapes on one background thread.

    A failed compilation is logged, not raised, because the real call compiles again
    and raises the error where it happens. close() blocks until every submitted
    compilation has finished, so that a call made afterwards does not start the
    same compilation a second time.
    """

    def __init__(self):
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="fsl_jax_compile"
        )

    def submit(self, jitted: Callable, *args: Any, **kwargs: Any) -> None:
        """Start compiling jitted for args (arrays or jax.ShapeDtypeStruct) and kwargs."""
        name = getattr(jitted, "__name__", repr(jitted))

        def compile_now():
            try:
                jitted.lower(*args, **kwargs).compile()
            except Exception as error:  # noqa: BLE001 - the real call raises it again.
                logging.warning("Compiling %s ahead of its first call failed: %s", name, error)

        self._executor.submit(compile_now)

    def close(self) -> None:
        """Wait for the submitted compilations and stop the thread."""
        self._executor.shutdown(wait=True)

    def __enter__(self) -> AheadOfTimeCompiler:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
