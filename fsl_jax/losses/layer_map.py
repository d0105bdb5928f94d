"""Pair student layers with teacher layers for the intermediate-layer loss terms.

Layers are numbered 1..L, so layer `l` is `hidden_states[l]` (index 0 is the
embedding output) and `attentions[l - 1]`.
"""

from __future__ import annotations

from collections.abc import Sequence

LAYER_MAP_STRATEGIES = ("uniform", "last_k")

LayerMap = str | Sequence[int] | Sequence[Sequence[int]]


def _check_layer_count(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def _uniform_pairs(num_student_layers: int, num_teacher_layers: int) -> list[tuple[int, int]]:
    # Student layer i reads teacher layer ceil(i * L_t / L_s), so the last layers
    # always meet and 4 student layers over 12 teacher layers give 3, 6, 9, 12.
    return [
        (i, -(-i * num_teacher_layers // num_student_layers))
        for i in range(1, num_student_layers + 1)
    ]


def _last_k_pairs(
    num_student_layers: int, num_teacher_layers: int, k: int | None
) -> list[tuple[int, int]]:
    if k is None:
        k = min(num_student_layers, num_teacher_layers)
    _check_layer_count("k", k)
    if k > num_student_layers or k > num_teacher_layers:
        raise ValueError(
            f"Layer map 'last_k' with k={k} needs at least {k} layers in both models, but "
            f"the student has {num_student_layers} and the teacher {num_teacher_layers}. "
            f"Set k to at most {min(num_student_layers, num_teacher_layers)}."
        )
    student_start = num_student_layers - k
    teacher_start = num_teacher_layers - k
    return [(student_start + j, teacher_start + j) for j in range(1, k + 1)]


def _explicit_pairs(
    entries: Sequence, num_student_layers: int, num_teacher_layers: int
) -> list[tuple[int, int]]:
    if len(entries) == 0:
        raise ValueError("An explicit layer map must name at least one layer.")
    if all(isinstance(entry, int) and not isinstance(entry, bool) for entry in entries):
        # A flat list gives the teacher layer for student layers 1, 2, ... in order.
        if len(entries) != num_student_layers:
            raise ValueError(
                f"An explicit layer map given as a flat list needs one teacher layer per "
                f"student layer ({num_student_layers}), got {len(entries)}: {list(entries)}. "
                "Give (student_layer, teacher_layer) pairs to map only some layers."
            )
        pairs = [(i, teacher) for i, teacher in enumerate(entries, start=1)]
    else:
        pairs = []
        for entry in entries:
            if (
                isinstance(entry, (str, bytes))
                or not isinstance(entry, Sequence)
                or len(entry) != 2
            ):
                raise ValueError(
                    f"Invalid layer map entry {entry!r}: expected a (student_layer, "
                    "teacher_layer) pair of integers."
                )
            pairs.append((entry[0], entry[1]))

    for student_layer, teacher_layer in pairs:
        for role, layer, count in (
            ("student", student_layer, num_student_layers),
            ("teacher", teacher_layer, num_teacher_layers),
        ):
            if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= count:
                raise ValueError(
                    f"Layer pair ({student_layer!r}, {teacher_layer!r}) names {role} layer "
                    f"{layer!r}, but the {role} has layers 1..{count}."
                )
    return pairs


def map_layers(
    num_student_layers: int,
    num_teacher_layers: int,
    strategy: LayerMap = "uniform",
    k: int | None = None,
) -> list[tuple[int, int]]:
    """Return the (student_layer, teacher_layer) pairs that a layer map selects.

    Strategies:
      'uniform': every student layer i is paired with teacher layer
        ceil(i * L_t / L_s), which spreads the student over the whole teacher.
      'last_k': the last k student layers are paired in order with the last k
        teacher layers. k defaults to the smaller layer count.
      explicit list: either one teacher layer per student layer, such as
        [3, 6, 9, 12], or (student_layer, teacher_layer) pairs such as
        [(2, 4), (4, 8)], which may map any subset of layers.

    Raises:
      ValueError: an unknown strategy, a layer outside 1..L, or `k` out of range.
        The message names the offending value.
      TypeError: `strategy` is neither a string nor a list.
    """
    _check_layer_count("num_student_layers", num_student_layers)
    _check_layer_count("num_teacher_layers", num_teacher_layers)
    if k is not None and strategy != "last_k":
        raise ValueError(f"k={k!r} applies only to the 'last_k' layer map, not to {strategy!r}.")

    if isinstance(strategy, str):
        if strategy == "uniform":
            return _uniform_pairs(num_student_layers, num_teacher_layers)
        if strategy == "last_k":
            return _last_k_pairs(num_student_layers, num_teacher_layers, k)
        raise ValueError(
            f"Unknown layer map {strategy!r}. Valid strategies: {list(LAYER_MAP_STRATEGIES)}, "
            "or an explicit list of teacher layers or (student_layer, teacher_layer) pairs."
        )
    if not isinstance(strategy, Sequence):
        raise TypeError(
            f"Invalid layer map {strategy!r}: expected one of {list(LAYER_MAP_STRATEGIES)} or a list."
        )
    return _explicit_pairs(strategy, num_student_layers, num_teacher_layers)
