"""Train all-MiniLM-L6-v2 on CR 16-shot, five LM-BFF seeds.

Run:
  python run.py --config=configs/cr_finetune.py --workdir=runs/cr_finetune

Expected: test accuracy 73.6 ± 1.6 over the five seeds (mean ± std, docs/results.md).
"""

from configs import common


def get_config():
    config = common.get_base_config()
    config.task = "cr"
    config.max_length = 128
    config.train.length_buckets = (32, 64, 128)
    return config
