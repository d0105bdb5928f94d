"""The loop-free CPU lowering of Threefry-2x32 gives the same bits as JAX's own."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fsl_jax.train.threefry import threefry2x32_unrolled

# (key, counter, output) of Threefry-2x32 with 20 rounds, as
# jax.extend.random.threefry_2x32 returns them under JAX's own lowering.
KNOWN_ANSWERS = [
    ((0x00000000, 0x00000000), (0x00000000, 0x00000000), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
]


@pytest.mark.parametrize("key, counter, expected", KNOWN_ANSWERS)
def test_unrolled_matches_known_answers(key, counter, expected):
    words = [np.uint32(value) for value in (*key, *counter)]
    with np.errstate(over="ignore"):
        output = threefry2x32_unrolled(*words)
    assert [int(value) for value in output] == list(expected)


def test_registered_lowering_keeps_random_streams():
    # In a fresh interpreter, so the lowering registered by other tests cannot leak in.
    script = textwrap.dedent(
        """
        import jax, jax.numpy as jnp, numpy as np
        from fsl_jax.train.threefry import use_unrolled_threefry_on_cpu

        def draws(key):
            return (
                jax.random.bernoulli(key, 0.9, (3, 12, 17, 17)),
                jax.random.normal(jax.random.fold_in(key, 5), (1001,)),
                jax.random.split(key, 4),
                jax.random.randint(key, (257,), 0, 1000),
            )

        key = jax.random.PRNGKey(42)
        before = jax.jit(draws)(key)
        use_unrolled_threefry_on_cpu()
        after = jax.jit(draws)(key)
        for old, new in zip(before, after):
            np.testing.assert_array_equal(np.asarray(old), np.asarray(new))
        print("same")
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip().endswith("same")
