"""Fine-tune all-MiniLM-L6-v2 on TREC 16-shot, then distil it into a 2-layer student.

TREC has no unlabelled pool in the benchmark data, so the transfer pool is the
train and dev questions of the other four seeds (all drawn from the TREC train
set), with labels dropped and any question of this seed's splits removed.

Run:
  python run.py --config=configs/trec_distill.py --workdir=runs/trec_distill

Expected: see docs/results.md for teacher and student test accuracy.
"""

from configs import trec_finetune


def get_config():
    config = trec_finetune.get_config()
    config.distill.enabled = True
    # The teacher of the measured students (docs/results.md): the pair stage, then the
    # classifier fine-tune from a prototype head. A distill.teacher_workdir to reuse must
    # come from the fine-tune config run with these overrides. Its pair stage padded
    # each sentence (packing came later and draws other dropout masks), and its
    # evaluations padded too.
    config.train.enabled = True
    config.model.head_init = "prototypes"
    config.contrastive.pack = False
    config.train.pack_eval = False
    # That teacher's pair stage ran 20 passes, which scored best on dev before the
    # fine-tune (docs/results.md).
    config.contrastive.num_epochs = 20
    config.distill.student.num_layers = 2
    config.distill.unlabeled.source = "other_seeds"
    config.distill.unlabeled.max_examples = 1000
    config.distill.train.batch_size = 16
    config.distill.train.num_steps = 100
    config.distill.train.eval_every = 25
    return config
