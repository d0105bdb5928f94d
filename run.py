"""Entry point of the main job.

python run.py --config=configs/sst2_finetune.py --workdir=runs/sst2 [--config.key=value ...]
"""

import logging as std_logging
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a config file with get_config().", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
flags.mark_flags_as_required(["config", "workdir"])


class _OrbaxInfoFilter(std_logging.Filter):
    """Drop orbax's per-file INFO lines; its warnings and errors still show."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def _parse_flags(argv):
    """Parse flags; report a mistyped --config.* override in one line instead of a traceback."""
    try:
        return flags.FLAGS(argv)
    except (AttributeError, KeyError) as error:
        # ml_collections raises these for a --config.* key that the config lacks.
        lines = str(error).encode().decode("unicode_escape").strip("'\"").splitlines()
        key, hint = lines[0].strip("'\""), " ".join(lines[1:])
        overrides = " ".join(arg for arg in argv[1:] if arg.startswith("--config."))
        sys.exit(f"Invalid config override ({overrides}): the config has no key {key!r}. {hint}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    from fsl_jax import pipeline

    os.makedirs(_WORKDIR.value, exist_ok=True)
    # absl writes its log to <workdir>/run.*; alsologtostderr keeps it on the terminal.
    logging.get_absl_handler().use_absl_log_file("run", _WORKDIR.value)
    logging.get_absl_handler().addFilter(_OrbaxInfoFilter())
    flags.FLAGS.alsologtostderr = True
    logging.info("fsl_jax run: config %s, workdir %s", flags.FLAGS["config"].value, _WORKDIR.value)
    logging.info("Config:\n%s", _CONFIG.value)
    if "ablation" in _CONFIG.value:
        from fsl_jax import ablation

        ablation.run_ablation(_CONFIG.value, _WORKDIR.value)
    else:
        pipeline.run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
