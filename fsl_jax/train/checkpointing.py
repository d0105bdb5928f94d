"""orbax-checkpoint managers: periodic checkpoints for resume, and the best on dev."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging

from fsl_jax.train.state import TrainState


def _abstract(tree: Any) -> Any:
    """Shapes, dtypes and shardings of tree, the restore target orbax expects."""
    return jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding), tree
    )


class Checkpointer:
    """Periodic checkpoints (latest `keep` steps) and the best checkpoint on dev.

    Each periodic checkpoint contains the train state (without the teacher) and a
    JSON record of the loop (best dev score so far, history), so that a resumed
    run continues exactly where the interrupted one stopped. Restoring reads the
    arrays straight into the shardings of a template state, so a run can resume
    on a different number of devices.

    Saves are asynchronous. orbax copies the arrays before save returns, then writes
    the files on a background thread while training goes on. A checkpoint appears
    under its step only once complete, so a run killed during a write resumes from
    the one before. Restores and close wait for the writes in flight.
    """

    def __init__(self, directory: str | Path, keep: int = 1):
        directory = Path(directory).resolve()
        self.directory = directory
        self._periodic = ocp.CheckpointManager(
            directory / "periodic",
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )
        self._best = ocp.CheckpointManager(
            directory / "best",
            options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True),
        )

    def latest_step(self) -> int | None:
        self._periodic.wait_until_finished()
        return self._periodic.latest_step()

    def save(self, state: TrainState, loop_record: dict[str, Any]) -> None:
        step = int(jax.device_get(state.step))
        self._periodic.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state.checkpoint_items()),
                loop=ocp.args.JsonSave(loop_record),
            ),
        )
        logging.info("Saving checkpoint at step %d to %s", step, self.directory / "periodic")

    def restore_latest(self, template: TrainState) -> tuple[TrainState, dict[str, Any]] | None:
        """Return (state, loop record) of the latest periodic checkpoint, or None."""
        self._periodic.wait_until_finished()
        step = self._periodic.latest_step()
        if step is None:
            return None
        restored = self._periodic.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(_abstract(template.checkpoint_items())),
                loop=ocp.args.JsonRestore(),
            ),
        )
        items = restored["state"]
        state = template.replace(
            step=items["step"],
            params=items["params"],
            opt_state=items["opt_state"],
            rng=items["rng"],
        )
        logging.info("Restored checkpoint at step %d from %s", step, self.directory / "periodic")
        return state, dict(restored["loop"])

    def save_best(self, step: int, params: Any, record: dict[str, Any]) -> None:
        """Replace the best checkpoint with params at step, and its dev record."""
        # A resumed run replays the evals after its last periodic checkpoint, so a best
        # checkpoint from those steps may exist already: remove it before saving again.
        for existing in self._best.all_steps():
            if existing >= step:
                self._best.delete(existing)
        self._best.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(params), record=ocp.args.JsonSave(record)
            ),
            force=True,
        )
        logging.info("Saving best-on-dev params at step %d: %s", step, record)

    def restore_best(self, template_params: Any) -> tuple[Any, dict[str, Any]]:
        self._best.wait_until_finished()
        step = self._best.latest_step()
        if step is None:
            raise FileNotFoundError(f"No best checkpoint under {self.directory / 'best'}.")
        restored = self._best.restore(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardRestore(_abstract(template_params)),
                record=ocp.args.JsonRestore(),
            ),
        )
        return restored["params"], dict(restored["record"])

    def best_params(
        self, final_params: Any, final_step: int, record: dict[str, Any]
    ) -> tuple[Any, dict[str, Any]]:
        """Return (best params on dev, their record) once train_loop has returned record.

        When the best step is final_step, final_params are the best params and are
        returned as they are. Otherwise the best checkpoint is read back.
        """
        if record["best_step"] == final_step and record["best_dev"] is not None:
            return final_params, {"step": final_step, **record["best_dev"]}
        return self.restore_best(final_params)

    def close(self) -> None:
        """Wait for the writes in flight, then release the managers."""
        self._periodic.close()
        self._best.close()

    def close_after(self, pending_writes: contextlib.ExitStack | None) -> None:
        """Close when pending_writes closes, so the writes overlap later work, or now if None."""
        if pending_writes is None:
            self.close()
        else:
            pending_writes.callback(self.close)
