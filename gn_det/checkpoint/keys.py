"""State-dict keys: grouped summaries for messages, renaming a foreign checkpoint's tensors, and
comparing them with the names and shapes a network expects."""
import re
from collections import Counter
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from ..utils.text import plural

BN_STEP_COUNTER = re.compile(r"(^|\.)num_batches_tracked$")  # BN step counters, not weights


def summarize_keys(keys: Sequence[str], max_groups: int = 4) -> str:
    """'N keys: prefix.* (count), ... (e.g. one.full.key)': keys grouped by their module's dotted
    prefix, as deep as fits in `max_groups` groups (the largest ones shown when even top-level
    names do not)."""
    keys = sorted(keys)
    if not keys:
        return "0 keys"
    modules = [k.rpartition(".")[0] or k for k in keys]  # a module's parameters group together
    for depth in (4, 3, 2, 1):
        groups = Counter(".".join(m.split(".")[:depth]) for m in modules)
        if len(groups) <= max_groups:
            break
    top = groups.most_common(max_groups)
    shown = [f"{p}.* ({n})" if n > 1 or p not in keys else p for p, n in top]
    more = len(groups) - len(shown)
    example = next((k for k in keys if k.startswith(top[0][0] + ".")), None)
    return (f"{plural(len(keys), 'key')}: {', '.join(shown)}"
            + (f", +{more} more groups" if more else "")
            + (f" (e.g. {example})" if top[0][1] > 1 and example else ""))


def strip_module_prefix(key: str) -> str:
    """`key` without the leading 'module.' that DataParallel / DDP checkpoints carry."""
    return key[len("module."):] if key.startswith("module.") else key


def rename_state_dict(state_dict: Mapping[str, object], rename: Callable[[str], Optional[str]]
                      ) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename a checkpoint's tensors with `rename` (None: no backbone counterpart). Returns
    (converted weights, keys without a counterpart). A leading 'module.' is stripped, BN step
    counters are dropped and numpy arrays become tensors."""
    converted, unexpected = {}, []
    for key, value in state_dict.items():
        bare = strip_module_prefix(key)
        if BN_STEP_COUNTER.search(bare):
            continue
        new = rename(bare)
        if new is None:
            unexpected.append(key)
        else:
            converted[new] = torch.as_tensor(value) if isinstance(value, np.ndarray) else value
    return converted, unexpected


def compare_keys(weights: Mapping[str, torch.Tensor], expected: Mapping[str, tuple],
                 optional=lambda key: False) -> Tuple[List[str], List[str], List[str]]:
    """(missing, unexpected, mismatched) of `weights` against backbone names -> shapes; keys for
    which `optional(key)` holds are neither missing nor unexpected."""
    missing = sorted(k for k in expected if k not in weights)
    unexpected = sorted(k for k in weights if k not in expected and not optional(k))
    mismatched = sorted(f"{k}: {tuple(v.shape)} vs {expected[k]}" for k, v in weights.items()
                        if k in expected and tuple(v.shape) != expected[k])
    return missing, unexpected, mismatched
