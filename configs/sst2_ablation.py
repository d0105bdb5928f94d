"""Ablate the distillation objective on SST-2 16-shot: five loss variants, five seeds.

One fine-tuned all-MiniLM-L6-v2 teacher per seed; each variant distils it into a
2-layer student on the labelled examples plus 1,000 unlabelled GLUE SST-2 train
sentences. The report compares every variant with "kd" by a paired bootstrap over
seeds and test examples.

Run:
  python run.py --config=configs/sst2_ablation.py --workdir=runs/sst2_ablation

Writes ablation.md, ablation.json and ablation.png in the workdir.
"""

import ml_collections

from configs import sst2_distill


def get_config():
    config = sst2_distill.get_config()
    config.ablation = ml_collections.ConfigDict()
    config.ablation.baseline = "kd"
    config.ablation.variants = ml_collections.ConfigDict(
        {
            "kd": "distill.terms.kd.weight=1.0,distill.terms.ce.weight=0.0",
            "kd_ce": "distill.terms.kd.weight=1.0,distill.terms.ce.weight=0.5",
            "kd_hidden": (
                "distill.terms.kd.weight=1.0,distill.terms.ce.weight=0.0,"
                "distill.terms.hidden_mse.weight=1.0"
            ),
            "kd_attention": (
                "distill.terms.kd.weight=1.0,distill.terms.ce.weight=0.0,"
                "distill.terms.attention_kl.weight=1.0"
            ),
            "all": (
                "distill.terms.kd.weight=1.0,distill.terms.ce.weight=0.5,"
                "distill.terms.hidden_mse.weight=1.0,distill.terms.attention_kl.weight=1.0,"
                "distill.terms.cosine.weight=1.0"
            ),
        }
    )
    config.ablation.num_resamples = 10000
    config.ablation.bootstrap_seed = 0
    return config
