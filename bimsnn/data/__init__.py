"""Dataset loaders (EEG, ECG, audio) that emit spike-encodable streams.

Every loader checks what it reads against its dataset's specification and raises
:class:`DataError` for bad input, naming the file and the problem. Where leaving a file out
is legitimate it does so loudly (a :class:`DataWarning` each, listed in the dataset's
``skipped``); ``strict=True`` makes those errors too. Modules, one idea each:

- EEG: :mod:`~bimsnn.data.chbmit` (CHB-MIT), :mod:`~bimsnn.data.bonn`, :mod:`~bimsnn.data.edf`,
  re-exported together by :mod:`~bimsnn.data.eeg`; :mod:`~bimsnn.data.siena` (Siena Scalp
  EEG) and :mod:`~bimsnn.data.edf_recordings` (any EDF given a channel list, and the
  seizures annotated beside an EDF in either layout);
- ECG: :mod:`~bimsnn.data.ptbxl`, :mod:`~bimsnn.data.mitbih`, :mod:`~bimsnn.data.wfdb_io`
  (one namespace: :mod:`~bimsnn.data.ecg`);
- audio: :mod:`~bimsnn.data.audio` (log-mel pipeline, FSDD, class folders),
  :mod:`~bimsnn.data.speechcommands`, :mod:`~bimsnn.data.librispeech`,
  :mod:`~bimsnn.data.fsdd_strings` (connected digit strings composed from FSDD);
- text: :mod:`~bimsnn.data.text` (vocabulary, the WikiText layout, LM windows);
- :mod:`~bimsnn.data.windows`: encoded windows held in memory and the splits (by recording,
  patient or time) every recipe and benchmark uses;
- :mod:`~bimsnn.data.errors` and :mod:`~bimsnn.data.files` (strict text, atomic writes,
  verified downloads, safe extraction); :mod:`~bimsnn.data.demo` writes demo datasets in the
  real file formats.
"""

from bimsnn.data.audio import (
    FSDD,
    AudioFolder,
    LibriSpeech,
    LogMel,
    SpeechCommands,
    pad_time_major,
    read_audio,
)
from bimsnn.data.ecg import (
    MITBIH,
    PTBXL,
    read_annotations,
    read_ptbxl_database,
    read_scp_statements,
    read_wfdb,
)
from bimsnn.data.edf_recordings import EDFRecordings, seizures_for
from bimsnn.data.eeg import (
    CHBMIT,
    Bonn,
    leave_one_patient_out,
    parse_chbmit_summary,
    patient_split,
    read_edf_header,
    recording_split,
)
from bimsnn.data.errors import DataError, DataWarning
from bimsnn.data.fsdd_strings import FSDDStrings
from bimsnn.data.siena import Siena, parse_seizure_list
from bimsnn.data.text import LMWindows, Vocab, collate_lm, read_wikitext, write_embedded_corpus
from bimsnn.data.windows import (
    WindowSet,
    materialize,
    record_split,
    recording_windows,
    split_recordings,
    time_split,
)

__all__ = [
    "CHBMIT",
    "FSDD",
    "FSDDStrings",
    "MITBIH",
    "PTBXL",
    "AudioFolder",
    "Bonn",
    "DataError",
    "DataWarning",
    "EDFRecordings",
    "LMWindows",
    "LibriSpeech",
    "LogMel",
    "Siena",
    "SpeechCommands",
    "Vocab",
    "WindowSet",
    "collate_lm",
    "leave_one_patient_out",
    "materialize",
    "pad_time_major",
    "parse_chbmit_summary",
    "parse_seizure_list",
    "patient_split",
    "read_annotations",
    "read_audio",
    "read_edf_header",
    "read_ptbxl_database",
    "read_scp_statements",
    "read_wfdb",
    "read_wikitext",
    "record_split",
    "recording_split",
    "recording_windows",
    "seizures_for",
    "split_recordings",
    "time_split",
    "write_embedded_corpus",
]
