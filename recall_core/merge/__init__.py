"""Merging: methods (RECALL schedule, average, task arithmetic, TIES, DARE), in memory and streaming.

- :mod:`.methods`: the per-tensor methods behind one interface, ``METHODS[name].merge(...)``.
- :mod:`.engine`: the shared tensor loop (:class:`MergeRun`), :func:`merge_state_dicts`, :func:`merged_model`.
- :mod:`.streaming`: :func:`stream_merge` writes Hugging Face safetensors shards as tensors are merged.
"""
from .engine import MergeRun, OutputTensor, merge_state_dicts, merged_model
from .methods import METHODS, MergeMethod, get_method
from .streaming import DEFAULT_SHARD_BYTES, stream_merge

__all__ = ["METHODS", "MergeMethod", "get_method", "MergeRun", "OutputTensor", "merge_state_dicts",
           "merged_model", "stream_merge", "DEFAULT_SHARD_BYTES"]
