"""Train all-MiniLM-L6-v2 on FewCLUE EPRSTMT (Chinese sentiment), seeds 0-4.

FewCLUE ships five train/dev draws (train_0..4.json, 32 rows each) and a
labelled public test set (610 rows); the seeds name those draws.

Run:
  python run.py --config=configs/eprstmt_finetune.py --workdir=runs/eprstmt_finetune

Expected: test accuracy 55.4 ± 2.2 over the five draws (mean ± std, docs/results.md).

NOTE: all-MiniLM-L6-v2 has an English WordPiece vocabulary, so most Chinese
characters map to [UNK]; this config exercises the Chinese input path and is not
a strong Chinese baseline.
"""

from configs import common


def get_config():
    config = common.get_base_config()
    config.task = "eprstmt"
    config.seeds = (0, 1, 2, 3, 4)
    config.max_length = 128
    config.train.length_buckets = (64, 128)
    return config
