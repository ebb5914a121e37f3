"""Deprecated location: see :mod:`bimsnn.training.checkpoint` (shim for the migration)."""
from bimsnn.training.checkpoint import *  # noqa: F401,F403
from bimsnn.training.checkpoint import (  # noqa: F401
    atomic_torch_save,
    atomic_write_bytes,
    cpu_state_dict,
    load_checkpoint,
    restore_training_state,
    rng_state,
    set_rng_state,
    training_state,
    write_json,
)
