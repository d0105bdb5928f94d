"""Data stage: loading, cleaning, K-shot sampling, tokenization and static-shape batching.

Typical use:

    splits, vocab = load_task("sst2", seed=13)              # or load_lmbff_kshot(dir, 16, 13)
    train, report = clean_split(splits["train"])
    tokenizer = Tokenizer.from_pretrained(model_dir)
    encoded = encode_split(tokenizer, train, max_length=128, label_vocab=vocab)
    for batch in batch_iterator(encoded, 32, (32, 64, 128), shuffle=True, seed=0, epoch=0, num_devices=8):
        ...

Reports (LoadReport, CleaningReport, DuplicateReport, OverlapReport, AuditReport,
SamplingReport, TruncationReport, BucketReport) are dataclasses with `to_dict`,
`to_json`, `summary` and `log`. Formats and options are described in docs/data.md.
TFDS loading lives in `fsl_jax.data.tfds_source` and needs the `tfds` extra.
"""

from fsl_jax.data.batching import (
    DEFAULT_BUCKETS,
    BucketReport,
    batch_iterator,
    bucket_length,
    bucket_report,
    epoch_order,
    make_batch,
    num_batches,
    resolve_batch_size,
)
from fsl_jax.data.cleaning import (
    CleaningConfig,
    CleaningReport,
    clean_split,
    clean_text,
    clean_texts,
)
from fsl_jax.data.encoding import EncodedDataset, TruncationReport, encode_split
from fsl_jax.data.kshot import (
    KShotSample,
    SamplingReport,
    format_split,
    sample_kshot,
    write_lmbff_kshot,
    write_split,
)
from fsl_jax.data.labels import LabelVocab, build_label_vocab, sort_labels
from fsl_jax.data.loaders import kshot_folder, load_lmbff_kshot, load_split, load_unlabeled
from fsl_jax.data.packing import (
    fill_packed_batch,
    make_packed_batch,
    pack_rows,
    pack_split,
    packed_eval_batches,
    packed_shape,
)
from fsl_jax.data.paths import default_data_dir
from fsl_jax.data.quality import (
    AuditReport,
    DuplicateReport,
    OverlapReport,
    audit_splits,
    find_duplicates,
    find_overlaps,
    remove_overlaps,
)
from fsl_jax.data.records import (
    FEWCLUE_JSONL,
    LMBFF_CSV,
    LMBFF_TSV,
    DataError,
    Example,
    FileFormat,
    LoadReport,
    Split,
    infer_format,
)
from fsl_jax.data.reports import Report
from fsl_jax.data.tasks import (
    TASKS,
    TaskSpec,
    get_task,
    load_task,
    load_task_pool,
    load_task_unlabeled,
)
from fsl_jax.data.tokenizer import Tokenizer

__all__ = [
    "AuditReport",
    "BucketReport",
    "CleaningConfig",
    "CleaningReport",
    "DEFAULT_BUCKETS",
    "DataError",
    "DuplicateReport",
    "EncodedDataset",
    "Example",
    "FEWCLUE_JSONL",
    "FileFormat",
    "KShotSample",
    "LMBFF_CSV",
    "LMBFF_TSV",
    "LabelVocab",
    "LoadReport",
    "OverlapReport",
    "Report",
    "SamplingReport",
    "Split",
    "TASKS",
    "TaskSpec",
    "Tokenizer",
    "TruncationReport",
    "audit_splits",
    "batch_iterator",
    "bucket_length",
    "bucket_report",
    "build_label_vocab",
    "clean_split",
    "clean_text",
    "clean_texts",
    "default_data_dir",
    "encode_split",
    "epoch_order",
    "find_duplicates",
    "find_overlaps",
    "format_split",
    "get_task",
    "infer_format",
    "kshot_folder",
    "load_lmbff_kshot",
    "load_split",
    "load_task",
    "load_task_pool",
    "load_task_unlabeled",
    "load_unlabeled",
    "fill_packed_batch",
    "make_batch",
    "make_packed_batch",
    "num_batches",
    "pack_rows",
    "pack_split",
    "packed_eval_batches",
    "packed_shape",
    "remove_overlaps",
    "resolve_batch_size",
    "sample_kshot",
    "sort_labels",
    "write_lmbff_kshot",
    "write_split",
]
