"""orbax-checkpoint managers: periodic checkpoints for resume, and the best on dev."""

from __future__ import annotations

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
        self._periodic.wait_until_finished()
        logging.info("Saved checkpoint at step %d to %s", step, self.directory / "periodic")

    def restore_latest(self, template: TrainState) -> tuple[TrainState, dict[str, Any]] | None:
        """Return (state, loop record) of the latest periodic checkpoint, or None."""
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
        self._best.wait_until_finished()
        logging.info("Saved best-on-dev params at step %d: %s", step, record)

    def restore_best(self, template_params: Any) -> tuple[Any, dict[str, Any]]:
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

    def close(self) -> None:
        self._periodic.close()
        self._best.close()
