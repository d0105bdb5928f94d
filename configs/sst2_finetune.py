"""Fine-tune all-MiniLM-L6-v2 on SST-2 16-shot, five LM-BFF seeds.

Run:
  python run.py --config=configs/sst2_finetune.py --workdir=runs/sst2_finetune

Expected: see docs/results.md for the measured test accuracy (mean ± std over seeds).
"""

from configs import common


def get_config():
    config = common.get_base_config()
    config.task = "sst2"
    config.train.length_buckets = (32, 64)
    config.max_length = 64
    return config
