"""The train loop for one model and one seed: steps, evals, checkpoints, resume."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Iterator

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh
from tqdm.auto import tqdm

from fsl_jax.train.checkpointing import Checkpointer
from fsl_jax.train.mesh import to_global_batch
from fsl_jax.train.state import TrainState
from fsl_jax.train.writers import MetricWriter


class NonFiniteLossError(FloatingPointError):
    """Raised when the train loss or the norm of its gradient becomes NaN or Inf."""


@dataclasses.dataclass
class LoopSettings:
    """Step counts of one training run.

    Attributes:
      num_steps: train steps in total.
      steps_per_epoch: batches in one epoch; epoch e, batch b is step e * steps_per_epoch + b.
      eval_every: steps between dev evaluations (0: only at the end).
      checkpoint_every: steps between periodic checkpoints (0: none).
      log_every: steps between train-metric lines.
      select_metric: dev metric that picks the best checkpoint (higher is better).
      stop_after: stop (as if killed) after this many steps; for resume tests.
      eval_at_start: evaluate the initial params at step 0 as a selection candidate.
    """

    num_steps: int
    steps_per_epoch: int
    eval_every: int = 0
    checkpoint_every: int = 0
    log_every: int = 10
    select_metric: str = "accuracy"
    stop_after: int | None = None
    eval_at_start: bool = False


def _batches_from(
    make_epoch: Callable[[int], Iterator[dict]], start_step: int, steps_per_epoch: int
) -> Iterator[tuple[int, dict]]:
    """Yield (step, batch) from start_step on, skipping the batches already trained."""
    epoch, skip = divmod(start_step, steps_per_epoch)
    step = start_step
    while True:
        for index, batch in enumerate(make_epoch(epoch)):
            if index < skip:
                continue
            yield step, batch
            step += 1
        skip = 0
        epoch += 1


def train_loop(
    *,
    state: TrainState,
    train_step: Callable[[TrainState, dict], tuple[TrainState, dict]],
    make_epoch: Callable[[int], Iterator[dict]],
    evaluate: Callable[[Any], dict[str, float]],
    settings: LoopSettings,
    mesh: Mesh,
    checkpointer: Checkpointer,
    writer: MetricWriter,
    description: str = "train",
) -> tuple[TrainState, dict[str, Any]]:
    """Train to settings.num_steps, resuming from the latest checkpoint if there is one.

    The best params on dev (settings.select_metric, ties keep the earlier step) are
    saved through checkpointer.save_best. Returns the final state and the loop
    record: {"best_step", "best_dev", "history": [dev metrics per eval]}.

    Raises:
      NonFiniteLossError: the loss or its gradient norm became NaN or Inf. The
        message names the step, and the checkpoints written before it are left as
        they were.
    """
    record: dict[str, Any] = {"best_step": -1, "best_dev": None, "history": []}
    restored = checkpointer.restore_latest(state)
    if restored is not None:
        state, record = restored
    start_step = int(jax.device_get(state.step))
    if start_step >= settings.num_steps:
        logging.info("%s: already trained %d steps; nothing to do.", description, start_step)
        return state, record

    logging.info(
        "%s: training steps %d to %d (%d per epoch).",
        description,
        start_step,
        settings.num_steps,
        settings.steps_per_epoch,
    )

    def run_eval(step: int) -> None:
        dev = evaluate(state.params)
        dev = {key: float(value) for key, value in dev.items()}
        record["history"].append({"step": step, **dev})
        writer.write(step, {f"dev_{key}": value for key, value in dev.items()})
        score = dev[settings.select_metric]
        if record["best_dev"] is None or score > record["best_dev"][settings.select_metric]:
            record["best_step"] = step
            record["best_dev"] = dev
            checkpointer.save_best(step, state.params, {"step": step, **dev})
        logging.info(
            "%s step %d: dev %s (best step %d)", description, step, dev, record["best_step"]
        )

    if start_step == 0 and settings.eval_at_start:
        # Step 0 scores the initial params (e.g. a prototype head), so selection on dev
        # can keep them when training only hurts.
        run_eval(0)

    progress = tqdm(
        total=settings.num_steps,
        initial=start_step,
        desc=description,
        unit="step",
        disable=jax.process_index() != 0,
        dynamic_ncols=True,
    )
    started = time.perf_counter()
    for step, batch in _batches_from(make_epoch, start_step, settings.steps_per_epoch):
        if step >= settings.num_steps:
            break
        if settings.stop_after is not None and step >= settings.stop_after:
            logging.info("%s: stopping at step %d as requested (stop_after).", description, step)
            break
        state, metrics = train_step(state, to_global_batch(batch, mesh))
        metrics = jax.device_get(metrics)
        loss = float(metrics["loss"])
        # A non-finite gradient with a finite loss has usually made the params NaN
        # already, so it also stops the run before they are evaluated or checkpointed.
        grad_norm = float(metrics.get("grad_norm", 0.0))
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            progress.close()
            if math.isfinite(loss):
                value = f"gradient norm is {grad_norm}"
            else:
                value = f"loss is {loss}"
            raise NonFiniteLossError(
                f"{description}: {value} at step {step}. The latest checkpoint "
                f"(step {checkpointer.latest_step()}) is unchanged; lower the learning rate "
                "or check the inputs of this batch."
            )
        done = step + 1
        progress.update(1)
        if done % settings.log_every == 0 or done == settings.num_steps:
            train = {f"train_{key}": float(np.asarray(value)) for key, value in metrics.items()}
            train["steps_per_second"] = (done - start_step) / (time.perf_counter() - started)
            writer.write(done, train)
            progress.set_postfix(loss=f"{loss:.4f}")
        if (settings.eval_every and done % settings.eval_every == 0) or done == settings.num_steps:
            run_eval(done)
        if settings.checkpoint_every and done % settings.checkpoint_every == 0:
            checkpointer.save(state, record)
    progress.close()
    return state, record
