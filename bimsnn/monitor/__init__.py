"""Streaming detection on continuous recordings, and online patient-specific adaptation.

:class:`Monitor` runs a saved seizure or beat model causally over raw samples fed in
blocks of any size (constant memory; its window scores equal the offline ones);
:func:`monitor_recording` and ``python -m bimsnn.monitor MODEL RECORDING...`` stream EDF
and WFDB files, adapt a copy of the model on each record's first labelled minutes
(:func:`adapt`), and write events.csv, scores.npz, timeline.png and metrics.json.
"""

from bimsnn.monitor.core import Event, Monitor, Scores, load_monitor_model
from bimsnn.monitor.recording import Recording, open_recording
from bimsnn.monitor.run import MonitorConfig, adapt, main, monitor_recording

__all__ = ["Monitor", "Event", "Scores", "load_monitor_model", "Recording", "open_recording",
           "MonitorConfig", "adapt", "monitor_recording", "main"]
