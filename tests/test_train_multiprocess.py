"""Two processes of 2 CPU devices each, on loopback, train like one process of 4 devices.

The worker (tests/multiprocess_worker.py) runs the real pipeline with
config.distributed pointing at a coordinator on 127.0.0.1 and gloo CPU collectives.
Both processes stop half-way, save a checkpoint together, and resume from it.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from train_jobs import DEFAULT_RECIPE, seed_metrics, small_config

from fsl_jax import pipeline
from fsl_jax.evaluate import outputs

SEED = 13
NUM_PROCESSES = 2
DEVICES_PER_PROCESS = 2
WORKER = Path(__file__).with_name("multiprocess_worker.py")
OVERRIDES = {"train.num_steps": 6, "train.eval_every": 3, "train.checkpoint_every": 2}
STOP_AFTER = 3
# Upper bound for both workers together. On a loaded 2-core machine, stop plus resume
# took about 2 minutes.
TIMEOUT_SECONDS = 420


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _worker_env(port: int) -> dict[str, str]:
    env = dict(os.environ)
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", ""))
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={DEVICES_PER_PROCESS}"
    env["JAX_PLATFORMS"] = "cpu"
    # jax binds the coordinator service to every interface unless this names one.
    env["JAX_COORDINATOR_BIND_ADDRESS"] = f"127.0.0.1:{port}"
    return env


def _tail(path: Path, lines: int = 40) -> str:
    text = path.read_text(errors="replace") if path.exists() else "(no output)"
    return "\n".join(text.splitlines()[-lines:])


def _run_workers(
    tmp_path: Path, workdir: Path, overrides: dict = OVERRIDES, stop_after: int = STOP_AFTER
) -> list[dict]:
    """Run the workers for at most TIMEOUT_SECONDS, then kill any still running.

    Each worker runs the small job with overrides, stopping after stop_after steps and
    resuming when stop_after > 0. Returns the record each worker wrote.
    """
    port = _free_loopback_port()
    env = _worker_env(port)
    # The resumed run in each worker reads its compiled steps from this cache.
    worker_overrides = {**overrides, "compilation_cache_dir": str(tmp_path / "xla_cache")}
    processes, logs = [], []
    for process_id in range(NUM_PROCESSES):
        log_path = tmp_path / f"worker_{process_id}.log"
        command = [
            sys.executable,
            str(WORKER),
            f"--port={port}",
            f"--process_id={process_id}",
            f"--num_processes={NUM_PROCESSES}",
            f"--workdir={workdir}",
            f"--output={tmp_path / f'worker_{process_id}.json'}",
            f"--overrides={json.dumps(worker_overrides)}",
            f"--stop_after={stop_after}",
        ]
        log = log_path.open("w")
        logs.append((log, log_path))
        processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))

    deadline = time.monotonic() + TIMEOUT_SECONDS
    try:
        # Stop waiting as soon as one worker fails, because the others would block in
        # their next collective until the timeout.
        while time.monotonic() < deadline:
            codes = [process.poll() for process in processes]
            if all(code == 0 for code in codes) or any(code not in (None, 0) for code in codes):
                break
            time.sleep(0.5)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for log, _ in logs:
            log.close()

    report = "\n".join(
        f"--- worker {index} (exit code {process.returncode}):\n{_tail(log_path)}"
        for index, (process, (_, log_path)) in enumerate(zip(processes, logs))
    )
    for process in processes:
        assert process.returncode == 0, f"a worker failed or timed out:\n{report}"
    return [
        json.loads((tmp_path / f"worker_{index}.json").read_text())
        for index in range(NUM_PROCESSES)
    ]


def _train_losses(workdir: Path) -> dict[int, list[float]]:
    """Return {step: every train_loss line written for that step}."""
    losses: dict[int, list[float]] = {}
    for record in outputs.read_metrics(workdir):
        if "train_loss" in record:
            losses.setdefault(record["step"], []).append(record["train_loss"])
    return losses


def _test_logits(workdir: Path) -> np.ndarray:
    with np.load(outputs.predictions_path(workdir, "teacher", SEED)) as arrays:
        return arrays["logits"]


def _skip_unless_host_name_is_loopback():
    # gloo listens on the address of this machine's host name, so run only where that is
    # a loopback address.
    address = socket.gethostbyname(socket.gethostname())
    if not address.startswith("127."):
        pytest.skip(f"host name resolves to {address}, not loopback; gloo would use it")


def _check_devices(records: list[dict]) -> None:
    for index, record in enumerate(records):
        assert record["process_index"] == index
        assert record["process_count"] == NUM_PROCESSES
        assert record["local_device_count"] == DEVICES_PER_PROCESS
        assert record["device_count"] == NUM_PROCESSES * DEVICES_PER_PROCESS


def _check_teacher_metrics(records: list[dict], single: dict) -> None:
    expected = seed_metrics(single)["teacher"]
    for record in records:
        metrics = seed_metrics(record["results"])["teacher"]
        assert metrics.keys() == expected.keys()
        for name, value in expected.items():
            np.testing.assert_allclose(metrics[name], value, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    _skip_unless_host_name_is_loopback()

    records = _run_workers(tmp_path, tmp_path / "distributed")
    single_dir = tmp_path / "single"
    single = pipeline.run(small_config({**OVERRIDES, "num_devices": 4}), single_dir)
    assert jax.process_count() == 1

    _check_devices(records)
    _check_teacher_metrics(records, single)

    distributed_dir = tmp_path / "distributed"
    np.testing.assert_allclose(
        _test_logits(distributed_dir), _test_logits(single_dir), rtol=1e-5, atol=1e-5
    )
    distributed_losses = _train_losses(distributed_dir)
    single_losses = _train_losses(single_dir)
    assert distributed_losses.keys() == single_losses.keys()
    final_step = OVERRIDES["train.num_steps"]
    # One writer (process 0): the last step, reached only after the resume, has one line.
    assert len(distributed_losses[final_step]) == 1
    for step, (loss,) in single_losses.items():
        np.testing.assert_allclose(
            distributed_losses[step][-1], loss, rtol=1e-5, atol=1e-5, err_msg=f"step {step}"
        )
    periodic = distributed_dir / "checkpoints" / f"seed_{SEED}" / "teacher" / "periodic"
    assert sorted(int(path.name) for path in periodic.iterdir() if path.name.isdigit()) == [
        final_step
    ]


@pytest.mark.slow
def test_default_recipe_two_processes_match(tmp_path):
    """The packed pair stage and the logistic head give the same teacher on 2 x 2 devices."""
    _skip_unless_host_name_is_loopback()

    records = _run_workers(tmp_path, tmp_path / "distributed", DEFAULT_RECIPE, stop_after=0)
    single_dir = tmp_path / "single"
    single = pipeline.run(small_config({**DEFAULT_RECIPE, "num_devices": 4}), single_dir)

    _check_devices(records)
    _check_teacher_metrics(records, single)
    np.testing.assert_allclose(
        _test_logits(tmp_path / "distributed"), _test_logits(single_dir), rtol=1e-5, atol=1e-5
    )
