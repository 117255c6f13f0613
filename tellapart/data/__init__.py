"""Data: sources of labelled images, checks, splits, and the memory-mapped cache everything reads."""

from ._batches import RowReader, epoch_order, iter_batches, to_tensor
from ._cache import Cache, PrepareConfig, prepare, verify_cache
from ._check import CheckReport, check_source
from ._shards import PartShare, ShardSet, is_shard_set, shard_cache
from ._decode import Decoded, Preprocess, decode
from ._sources import (
    ArchiveSource,
    CifarSource,
    CsvSource,
    FolderSource,
    IdxSource,
    Item,
    PairedSource,
    Source,
    open_source,
)
from ._split import SplitConfig, split_by_group
from ._synth import SynthConfig, synth_faces

__all__ = [
    "ArchiveSource",
    "RowReader",
    "Cache",
    "CheckReport",
    "CifarSource",
    "CsvSource",
    "Decoded",
    "FolderSource",
    "IdxSource",
    "Item",
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
    "is_shard_set",
    "iter_batches",
    "open_source",
    "prepare",
    "shard_cache",
    "split_by_group",
    "synth_faces",
    "to_tensor",
    "verify_cache",
]
