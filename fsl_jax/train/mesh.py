"""Device mesh, shardings and host-to-device transfer of batches."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from absl import logging
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def initialize_distributed(config) -> None:
    """Call jax.distributed.initialize when the config names a coordinator.

    Keys of `config.distributed`: coordinator_address ('' = single process),
    num_processes, process_id, local_device_ids (optional), cpu_collectives
    ('gloo' so CPU processes can reduce across hosts).
    """
    distributed = config.get("distributed")
    if distributed is None or not distributed.get("coordinator_address"):
        return
    if jax.distributed.is_initialized():
        # A second run in the same process (a notebook, or a resume after stop_after)
        # keeps the first connection, because jax.distributed.initialize may run only once.
        if jax.process_count() != distributed.num_processes:
            raise ValueError(
                f"This process already joined a run of {jax.process_count()} processes, but "
                f"distributed.num_processes is {distributed.num_processes}; start a new "
                "process to change the process count."
            )
        logging.info("jax.distributed is already initialized; process %d.", jax.process_index())
        return
    if distributed.get("cpu_collectives"):
        jax.config.update("jax_cpu_collectives_implementation", distributed.cpu_collectives)
    jax.distributed.initialize(
        coordinator_address=distributed.coordinator_address,
        num_processes=distributed.num_processes,
        process_id=distributed.process_id,
        local_device_ids=distributed.get("local_device_ids") or None,
    )
    logging.info(
        "Process %d of %d joined; %d local and %d global devices.",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def make_mesh(num_devices: int | None = None) -> Mesh:
    """Return a 1-D data-parallel mesh over the first num_devices devices (all by default)."""
    devices = jax.devices()
    if num_devices:
        if num_devices > len(devices):
            raise ValueError(
                f"num_devices={num_devices} but only {len(devices)} devices are visible."
            )
        devices = devices[:num_devices]
    return jax.make_mesh(
        (len(devices),), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices
    )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def data_sharded(mesh: Mesh) -> NamedSharding:
    """Sharding that splits the leading (batch) axis over the data axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_divisible(global_batch_size: int, mesh: Mesh) -> None:
    devices = mesh.shape[DATA_AXIS]
    if global_batch_size % devices:
        raise ValueError(
            f"Global batch size {global_batch_size} cannot be split over {devices} devices; "
            f"use a multiple of {devices}."
        )


def process_batch_slice(global_batch_size: int) -> slice:
    """Return the rows of a global batch that this process loads."""
    count = jax.process_count()
    if global_batch_size % count:
        raise ValueError(
            f"Global batch size {global_batch_size} cannot be split over {count} processes."
        )
    per_process = global_batch_size // count
    start = jax.process_index() * per_process
    return slice(start, start + per_process)


def to_global_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Place a batch on the mesh, split over the data axis.

    Every process passes the full global batch (all processes build the same batch
    from the same seed) and contributes only its own slice of rows.
    """
    sharding = data_sharded(mesh)
    first = next(iter(batch.values()))
    check_batch_divisible(first.shape[0], mesh)
    rows = process_batch_slice(first.shape[0])
    return {
        key: jax.make_array_from_process_local_data(sharding, value[rows], value.shape)
        for key, value in batch.items()
    }


def replicate_tree(tree: Any, mesh: Mesh) -> Any:
    return jax.device_put(tree, replicated(mesh))
