"""Train all-MiniLM-L6-v2 on SST-5 16-shot, five LM-BFF seeds.

Run:
  python run.py --config=configs/sst5_finetune.py --workdir=runs/sst5_finetune

Expected: test accuracy 32.8 ± 1.1 over the five seeds (mean ± std, docs/results.md).
"""

from configs import common


def get_config():
    config = common.get_base_config()
    config.task = "sst5"
    config.max_length = 64
    config.train.length_buckets = (32, 64)
    return config
