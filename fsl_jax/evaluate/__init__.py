"""Evaluation stage: metrics, multi-seed aggregation, reports and significance tests.

Modules:
  metrics: accuracy, macro-F1 and confusion matrix, plus jit-friendly batch sums.
  aggregate: mean and std over seeds, and the results.json record.
  outputs: file names and formats of a run's workdir.
  report: results.md rendering.
  significance: paired bootstrap and paired t-test between two models.
  ablation_report: ablation.md, ablation.json and ablation.png over loss variants.
"""
