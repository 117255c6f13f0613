"""Data: sources of labelled images, checks, splits, and the memory-mapped cache everything reads."""

from ._batches import RowReader, epoch_order, iter_batches, to_tensor
from ._cache import Cache, Manifest, PrepareConfig, prepare, verify_cache
from ._check import CheckReport, check_source
from ._issues import (
    ISSUE_FILTERS,
    ISSUE_MODELS,
    LabelIssue,
    LabelIssues,
    find_label_issues,
    label_issues_section,
    read_label_issues,
    write_label_issues,
)
from ._notes import upscale_note
from ._shards import PartShare, ShardSet, is_shard_set, shard_cache
from ._decode import MAX_PIXELS_ENV, Decoded, Payload, Preprocess, decode
from ._sources import (
    FASHION_MNIST_CLASSES,
    ArchiveSource,
    CifarSource,
    CsvSource,
    FolderSource,
    IdxSource,
    Item,
    PairedSource,
    Source,
    fingerprint_digest,
    idx_files,
    is_image_name,
    open_source,
    read_idx,
)
from ._split import SplitConfig, split_by_group, stratified_cap
from ._synth import SynthConfig, synth_faces

__all__ = [
    "FASHION_MNIST_CLASSES",
    "MAX_PIXELS_ENV",
    "ArchiveSource",
    "RowReader",
    "Cache",
    "CheckReport",
    "CifarSource",
    "CsvSource",
    "Decoded",
    "FolderSource",
    "ISSUE_FILTERS",
    "ISSUE_MODELS",
    "IdxSource",
    "Item",
    "LabelIssue",
    "LabelIssues",
    "Manifest",
    "PairedSource",
    "PartShare",
    "PrepareConfig",
    "Preprocess",
    "ShardSet",
    "Source",
    "SplitConfig",
    "SynthConfig",
    "check_source",
    "decode",
    "epoch_order",
    "find_label_issues",
    "is_shard_set",
    "iter_batches",
    "label_issues_section",
    "read_label_issues",
    "fingerprint_digest",
    "idx_files",
    "is_image_name",
    "open_source",
    "Payload",
    "prepare",
    "read_idx",
    "shard_cache",
    "split_by_group",
    "stratified_cap",
    "synth_faces",
    "to_tensor",
    "upscale_note",
    "verify_cache",
    "write_label_issues",
]
