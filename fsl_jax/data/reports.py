"""Base class for the data reports: plain dataclasses that log and serialise to JSON."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from absl import logging


def _to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            field.name: _to_jsonable(getattr(value, field.name))
            for field in dataclasses.fields(value)
        }
    if isinstance(value, dict):
        return {str(key): _to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


class Report:
    """Mixin for report dataclasses: `to_dict`, `to_json` and `log`."""

    def to_dict(self) -> dict[str, Any]:
        return _to_jsonable(self)

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent)

    def summary(self) -> str:
        """Return a one-line description for logs. Subclasses override it."""
        return self.to_json()

    def log(self, level: int = logging.INFO) -> None:
        logging.log(level, "%s: %s", type(self).__name__, self.summary())
