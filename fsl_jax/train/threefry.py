"""A faster CPU lowering of JAX's Threefry-2x32 hash, with the same output bits.

On CPU, jax 0.10 lowers threefry2x32 as a while loop of 5 iterations of 4 rounds,
so XLA writes the whole state to memory after each iteration. Dropout draws one
random word per activation element, and in a MiniLM train step at batch 8 x 128
the loop took about 12% of the XLA op time (jax.profiler). Unrolled, the 20 rounds
fuse into one elementwise kernel. For a [32, 12, 128, 128] dropout mask that ran
14x faster and compiled in 0.15 s instead of 1.9 s on the machine described in
docs/benchmarks.md. The algorithm is unchanged, so every key, mask and training
run gets the same bits as with JAX's own lowering.
"""

from __future__ import annotations

import numpy as np
from jax.extend.random import threefry2x32_p
from jax.interpreters import mlir

# Rotation constants of Threefry-2x32 with 20 rounds, in groups of four rounds, and
# the key-schedule parity constant, as jax._src.random.threefry2x32 defines them.
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KEY_SCHEDULE_PARITY = np.uint32(0x1BD11BDA)

_registered = False


def _rotate_left(value, distance: int):
    return (value << np.uint32(distance)) | (value >> np.uint32(32 - distance))


def threefry2x32_unrolled(key1, key2, count1, count2):
    """Return Threefry-2x32-20 of the counter words under the key, with no loop."""
    keys = (key1, key2, key1 ^ key2 ^ _KEY_SCHEDULE_PARITY)
    low = count1 + keys[0]
    high = count2 + keys[1]
    for injection in range(1, 6):
        for distance in _ROTATIONS[(injection - 1) % 2]:
            low = low + high
            high = _rotate_left(high, distance) ^ low
        low = low + keys[injection % 3]
        high = high + keys[(injection + 1) % 3] + np.uint32(injection)
    return low, high


def use_unrolled_threefry_on_cpu() -> None:
    """Lower threefry2x32 on CPU without a loop, for every computation traced after this.

    Calling it again does nothing. Compiled computations keep their lowering, and
    the persistent compilation cache keys on the lowered program, so no stale entry
    is reused.
    """
    global _registered
    if _registered:
        return
    mlir.register_lowering(
        threefry2x32_p,
        mlir.lower_fun(lambda *words: threefry2x32_unrolled(*words), multiple_results=True),
        platform="cpu",
    )
    _registered = True
