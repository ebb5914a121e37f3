"""Deprecated location: see :mod:`bimsnn.training.online` (shim for the migration)."""
from bimsnn.state import tree_map  # noqa: F401
from bimsnn.training.online import (  # noqa: F401
    eval_logits,
    has_step,
    make_pruner,
    make_rule,
    readout_params,
    seq_logits,
    window,
)
