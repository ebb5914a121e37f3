"""LibriSpeech (Panayotov et al. 2015): read English audiobooks with per-chapter transcripts.

Symbols: T frames, F mel bands.

``LibriSpeech(root, url, ..., download=False)`` follows torchaudio's layout
``<root>/LibriSpeech/<url>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac`` with
``<spk>-<chapter>.trans.txt``; ``__getitem__`` returns ``(features (T, F), transcript, meta)``.
``download=True`` fetches the archive, checks its SHA-256 (also when it was already there) and
extracts it through ``tarfile``'s ``"data"`` filter (:mod:`bimsnn.data.files`).
"""

from __future__ import annotations

from pathlib import Path

from bimsnn.data.audio import Encoder, LogMel, _AudioDataset
from bimsnn.data.errors import DataError, skip
from bimsnn.data.files import extract_tar, fetch, read_text

__all__ = ["LibriSpeech", "LIBRISPEECH_URL", "LIBRISPEECH_SHA256"]

LIBRISPEECH_URL = "https://www.openslr.org/resources/12/{}.tar.gz"
# As published with torchaudio's LIBRISPEECH.
LIBRISPEECH_SHA256 = {
    "dev-clean": "76f87d090650617fca0cac8f88b9416e0ebf80350acb97b343a85fa903728ab3",
    "dev-other": "12661c48e8c3fe1de2c1caa4c3e135193bfb1811584f11f569dd12645aa84365",
    "test-clean": "39fde525e59672dc6d1551919b1478f724438a95aa55f874b576be21967e6c23",
    "test-other": "d09c181bba5cf717b3dee7d4d592af11a3ee3a09e08ae025c5506f6ebe961c29",
    "train-clean-100": "d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2",
    "train-clean-360": "146a56496217e96c14334a160df97fffedd6e0a04e66b9c5af0d40be3c792ecf",
    "train-other-500": "ddb22f27f96ec163645d53215559df6aa36515f26e01dd70798188350adcb6d2",
}


class LibriSpeech(_AudioDataset):
    """LibriSpeech (Panayotov et al. 2015): ``<root>/LibriSpeech/<url>/<spk>/<chapter>/``
    ``<spk>-<chapter>-<utt>.flac`` with ``<spk>-<chapter>.trans.txt`` (``<utt-id> TRANSCRIPT``).

    The metadata logic is torchaudio's ``_get_librispeech_metadata`` (split each transcript line
    on its first space), but each ``.trans.txt`` is parsed once and audio is read by soundfile.
    Transcripts must be UTF-8; an id must be ``<spk>-<chapter>-<utt>`` of its own chapter, appear
    once, have text and an audio file. Audio files that no transcript lists are skipped loudly
    (``ds.skipped``; ``strict=True`` makes them a DataError).

    ``__getitem__(n)`` returns ``(features, transcript, meta)``: features ``(T, F)`` log-mel or
    ``encoder(features)``; transcript str; meta ``path``, ``speaker_id``, ``chapter_id``,
    ``utterance_id`` (ints).
    """

    def __init__(self, root: str | Path, url: str = "train-clean-100",
                 folder_in_archive: str = "LibriSpeech", ext_audio: str = ".flac",
                 sample_rate: int = 16000, n_mels: int = 40, encoder: Encoder | None = None,
                 pipeline: LogMel | None = None, download: bool = False, strict: bool = False):
        super().__init__(pipeline or LogMel(sample_rate, n_mels), encoder, strict)
        root = Path(root)
        base = root / folder_in_archive / url
        if download and not base.is_dir():
            if url not in LIBRISPEECH_SHA256:
                raise ValueError(f"url must be one of {list(LIBRISPEECH_SHA256)}, got {url!r}")
            archive = fetch(LIBRISPEECH_URL.format(url), root / f"{url}.tar.gz",
                            LIBRISPEECH_SHA256[url])
            extract_tar(archive, base, member_dir=f"LibriSpeech/{url}")
        transcripts = sorted(base.glob("*/*/*.trans.txt"))
        if not transcripts:
            raise DataError(base, "no <speaker>/<chapter>/*.trans.txt files")
        for trans in transcripts:
            self._read_transcript(trans, ext_audio)

    def _read_transcript(self, trans: Path, ext_audio: str) -> None:
        chapter = trans.name[:-len(".trans.txt")]
        listed = set()
        for k, line in enumerate(read_text(trans, "LibriSpeech transcript").splitlines(), 1):
            if not line.strip():
                continue
            fileid, _, text = line.strip().partition(" ")
            ids = fileid.split("-")
            if len(ids) != 3 or not all(i.isdigit() for i in ids):
                raise DataError(trans, f"line {k}: bad utterance id {fileid!r}")
            if fileid.rpartition("-")[0] != chapter:
                raise DataError(trans, f"line {k}: utterance {fileid} is not of chapter {chapter}")
            if fileid in listed:
                raise DataError(trans, f"line {k}: utterance {fileid} listed twice")
            if not text.strip():
                raise DataError(trans, f"line {k}: utterance {fileid} has no transcript")
            path = trans.parent / f"{fileid}{ext_audio}"
            if not path.is_file():
                raise DataError(path, f"audio listed in {trans.name} line {k} not found")
            listed.add(fileid)
            meta = {"path": str(path), "speaker_id": int(ids[0]), "chapter_id": int(ids[1]),
                    "utterance_id": int(ids[2])}
            self.items.append((path, text, meta, None))
        for path in sorted(trans.parent.glob(f"*{ext_audio}")):
            if path.stem not in listed:
                skip(self.skipped, path, f"not in {trans.name} (no transcript)", self.strict)
