"""Fine-tune all-MiniLM-L6-v2 on CR 16-shot, five LM-BFF seeds.

Run:
  python run.py --config=configs/cr_finetune.py --workdir=runs/cr_finetune

Expected: see docs/results.md for the measured test accuracy (mean ± std over seeds).
"""

from configs import common


def get_config():
    config = common.get_base_config()
    config.task = "cr"
    config.max_length = 128
    config.train.length_buckets = (32, 64, 128)
    return config
