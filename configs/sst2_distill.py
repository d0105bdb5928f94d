"""Fine-tune all-MiniLM-L6-v2 on SST-2 16-shot, then distil it into a 2-layer student.

The transfer set is the 32 labelled examples plus 1,000 unlabelled GLUE SST-2
train sentences (labels dropped, any sentence of the seed's splits removed).

Run:
  python run.py --config=configs/sst2_distill.py --workdir=runs/sst2_distill
  # Without the unlabelled pool:
  python run.py --config=configs/sst2_distill.py --workdir=runs/sst2_distill_labelled \\
      --config.distill.unlabeled.source=''

Expected: see docs/results.md for teacher and student test accuracy.
"""

from configs import sst2_finetune


def get_config():
    config = sst2_finetune.get_config()
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
    # The teacher trains on the deletion copies; the transfer set stays the labelled
    # sentences and the pool, because the copies lowered the student (docs/results.md).
    config.augment.for_transfer_set = False
    config.distill.student.num_layers = 2
    config.distill.unlabeled.source = "file"
    config.distill.unlabeled.path = "SST-2/glue/train_full.tsv"
    config.distill.unlabeled.max_examples = 1000
    config.distill.train.batch_size = 16
    config.distill.train.num_steps = 100
    config.distill.train.eval_every = 25
    return config
