"""Deprecated location: text data lives in :mod:`bimsnn.data.text` (issue 11); this shim
keeps the old import path until the integration pass removes it.

Training of per-step outputs (the former ``fit_seq`` / ``online_seq_loss``) is
:func:`bimsnn.training.fit` with ``per_step=True`` and
:class:`bimsnn.training.SequenceTarget`.
"""

from bimsnn.data.text import (  # noqa: F401  (re-exported: old import path)
    EOS,
    LEVELS,
    SPLITS,
    UNK,
    LMWindows,
    Vocab,
    collate_lm,
    read_wikitext,
    tokenize,
    wikitext_paths,
    write_embedded_corpus,
)
