"""Sequence-output metrics: CTC decoding, WER/CER, bits per character and perplexity.

Symbols: T time steps, B batch, V output classes (vocabulary + CTC blank), S label length.

CTC (Graves et al. 2006): per-step log-probabilities ``(T, B, V)`` over the labels and a
*blank*; a path collapses to a label sequence by merging repeats, then dropping blanks.
:func:`ctc_greedy_decode` takes the best class per step (best path); :func:`ctc_beam_decode`
is the standard prefix beam search (no language model), which sums over the paths that
collapse to one prefix.

Error rates are corpus-level, as in Kaldi/jiwer: ``Σ edit distance / Σ reference length``
(Levenshtein on words for WER, on characters for CER), through
``torchaudio.functional.edit_distance``. Entropy metrics take a *summed* negative
log-likelihood in nats: ``bpc = nll / (n_chars · ln 2)``, ``ppl = exp(nll / n_tokens)``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from torch import Tensor


# ---------------------------------------------------------------------------- CTC decoding
def ctc_collapse(path: Sequence[int], blank: int = 0) -> list[int]:
    """Merge repeats, then drop blanks: the CTC many-to-one map B.

    >>> ctc_collapse([0, 3, 3, 0, 3, 5, 5, 0])
    [3, 3, 5]
    """
    out, prev = [], None
    for k in path:
        k = int(k)
        if k != prev and k != blank:
            out.append(k)
        prev = k
    return out


def ctc_greedy_decode(log_probs: Tensor, lengths: Tensor | Sequence[int] | None = None,
                      blank: int = 0) -> list[list[int]]:
    """Best-path decoding.

    Args:
        log_probs: (T, B, V) log-probabilities (or logits: argmax is the same).
        lengths: (B,) valid steps per item (None: all T).
    Returns:
        B label-id lists.
    """
    T, B = log_probs.shape[:2]
    best = log_probs.argmax(-1).cpu()                              # (T, B)
    lens = [T] * B if lengths is None else [int(n) for n in lengths]
    return [ctc_collapse(best[: lens[b], b].tolist(), blank) for b in range(B)]


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))


def ctc_beam_decode(log_probs: Tensor, lengths: Tensor | Sequence[int] | None = None,
                    blank: int = 0, beam: int = 8) -> list[list[int]]:
    """Prefix beam search (no language model); ``beam=1`` is close to greedy.

    Each prefix keeps two log-scores, ending in blank (p_b) and ending in its last label
    (p_nb), so paths that collapse to the same prefix are summed, not maxed.

    Args:
        log_probs: (T, B, V) log-probabilities (log_softmax over V).
        lengths: (B,) valid steps (None: all T). beam: prefixes kept per step.
    Returns:
        B label-id lists (the best prefix of each item).
    """
    T, B, V = log_probs.shape
    lp = log_probs.detach().double().cpu()
    lens = [T] * B if lengths is None else [int(n) for n in lengths]
    out = []
    ninf = -math.inf
    for b in range(B):
        beams: dict[tuple, tuple[float, float]] = {(): (0.0, ninf)}  # prefix → (p_b, p_nb)
        for t in range(lens[b]):
            row = lp[t, b].tolist()
            nxt: dict[tuple, list[float]] = defaultdict(lambda: [ninf, ninf])
            for prefix, (pb, pnb) in beams.items():
                total = _logaddexp(pb, pnb)
                e = nxt[prefix]                                    # stay: blank or repeat
                e[0] = _logaddexp(e[0], total + row[blank])
                if prefix:
                    e[1] = _logaddexp(e[1], pnb + row[prefix[-1]])
                for k in range(V):
                    if k == blank:
                        continue
                    new = prefix + (k,)
                    e = nxt[new]
                    # a repeat of the last label needs a blank in between
                    src = pb if prefix and k == prefix[-1] else total
                    e[1] = _logaddexp(e[1], src + row[k])
            ranked = sorted(nxt.items(), key=lambda kv: -_logaddexp(*kv[1]))[:beam]
            beams = {p: (s[0], s[1]) for p, s in ranked}
        best = max(beams.items(), key=lambda kv: _logaddexp(*kv[1]))[0]
        out.append(list(best))
    return out


# ---------------------------------------------------------------------------- error rates
def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1)."""
    import torchaudio  # lazy: importing torchaudio is slow

    return int(torchaudio.functional.edit_distance(list(ref), list(hyp)))


def error_counts(refs: Sequence[str], hyps: Sequence[str], unit: str = "word"
                 ) -> tuple[int, int]:
    """(Σ edits, Σ reference length) over pairs, in words (split on whitespace) or chars."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if unit not in ("word", "char"):
        raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
    edits = n = 0
    for r, h in zip(refs, hyps):
        r_, h_ = (r.split(), h.split()) if unit == "word" else (list(r), list(h))
        edits += edit_distance(r_, h_)
        n += len(r_)
    return edits, n


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Word error rate, corpus-level: Σ word edits / Σ reference words.

    >>> wer(["the cat sat"], ["the bat sat down"])   # 1 substitution + 1 insertion
    0.6666666666666666
    """
    edits, n = error_counts(refs, hyps, "word")
    return edits / n if n else float("nan")


def cer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Character error rate, corpus-level: Σ character edits / Σ reference characters
    (spaces count as characters).

    >>> cer(["abcd"], ["abd"])
    0.25
    """
    edits, n = error_counts(refs, hyps, "char")
    return edits / n if n else float("nan")


# ---------------------------------------------------------------------------- entropy
def bits_per_char(nll_nats: float, n_chars: int) -> float:
    """Σ −ln p over ``n_chars`` characters → bits per character.

    >>> round(bits_per_char(10 * math.log(4), 10), 6)   # uniform over 4 symbols: 2 bits
    2.0
    """
    if n_chars <= 0:
        raise ValueError(f"n_chars must be > 0, got {n_chars}")
    return nll_nats / (n_chars * math.log(2))


def perplexity(nll_nats: float, n_tokens: int) -> float:
    """Σ −ln p over ``n_tokens`` → exp(mean nll); ∞ where it overflows.

    >>> round(perplexity(5 * math.log(7), 5), 6)        # uniform over 7 words
    7.0
    """
    if n_tokens <= 0:
        raise ValueError(f"n_tokens must be > 0, got {n_tokens}")
    mean = nll_nats / n_tokens
    return math.exp(mean) if mean < 700 else math.inf
