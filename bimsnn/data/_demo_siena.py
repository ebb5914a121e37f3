"""Siena-layout demo writer (re-exported as :func:`bimsnn.data.demo.siena`).

Symbols: E electrodes (19, 10-20 system), N samples, fs = 512 Hz in the files.

Signals come from the CHB-MIT demo simulator (:mod:`bimsnn.data.demo`, 256 Hz) upsampled
×2, written as Siena's referential "EEG Fp1"-style channels with its old 10-20 names.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from bimsnn.data.demo import _ELEC, _FOCI, _FS, _atomic_text, _simulate
from bimsnn.data.errors import DataError
from bimsnn.data.files import atomic_write, read_text

FS = 512
# Siena's electrode order (the 10-20 subset of its 29) and its old names for T7/T8/P7/P8.
_SIENA = ("Fp1", "F3", "C3", "P3", "O1", "F7", "T3", "T5", "Fz", "Cz", "Pz", "Fp2", "F4",
          "C4", "P4", "O2", "F8", "T4", "T6")
_MODERN = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}


def _schedule(rng, k: int, file_s: float) -> list[tuple[int, int]]:
    """k seizures (20–40 s, ≥ 60 s apart, ≥ 30 s from the file's edges), or fewer if none fit."""
    for _ in range(500):
        durs = rng.integers(20, 41, k)
        ons = np.sort(rng.integers(30, int(file_s) - 60, k))
        if np.all(np.diff(ons) > durs[:-1] + 60) and ons[-1] + durs[-1] <= file_s - 30:
            return [(int(a), int(a + d)) for a, d in zip(ons, durs)]
    return _schedule(rng, k - 1, file_s) if k > 1 else [(30, 50)]


def _ecg(rng, n: int) -> np.ndarray:
    """A crude ECG (µV): Gaussian R waves at ~70 beats/min on baseline wander."""
    t = np.arange(n) / FS
    beats = np.cumsum(rng.normal(60 / 70, 0.03, int(t[-1] * 1.5) + 2))
    x = sum(np.exp(-0.5 * ((t - b) / 0.012) ** 2) for b in beats if b < t[-1] + 1)
    return 800 * x + 50 * np.sin(2 * np.pi * 0.25 * t)


def _write_edf(path: Path, eeg: np.ndarray, ecg: np.ndarray, start: dt.datetime) -> None:
    import edfio

    # The real headers' ranges: ±4096 µV in 1/8 µV steps (EEG), ±499712 µV (EKG).
    sig = [edfio.EdfSignal(np.clip(x, -4096, 4095.875), sampling_frequency=FS, label=f"EEG {name}",
                           physical_dimension="uV", physical_range=(-4096, 4095.875),
                           digital_range=(-32768, 32767))
           for name, x in zip(_SIENA, eeg)]
    sig.append(edfio.EdfSignal(ecg, sampling_frequency=FS, label="EKG EKG", physical_dimension="uV",
                               physical_range=(-499712, 499696.7), digital_range=(-32768, 32767)))
    edf = edfio.Edf(sig, patient=edfio.Patient(), starttime=start.time(),
                    recording=edfio.Recording(startdate=start.date()), data_record_duration=1.0)
    with atomic_write(path) as tmp:
        edf.write(tmp)


def _seizure_list(pid: str, files: list[tuple[str, dt.datetime, float, list]]) -> str:
    """The real list's format: one "Seizure n" block per seizure, clock times hh.mm.ss."""
    lines = [pid, "", f"Data Sampling Rate: {FS} Hz", "", "Channels in EDF files:"]
    lines += [f"Channel {i}: {c}" for i, c in enumerate(_SIENA + ("EKG 1",), 1)] + ["", ""]
    k = 0
    for name, start, dur, sz in files:
        for on, off in sz:
            k += 1
            lines += [f"Seizure n {k}", f"File name: {name}",
                      f"Registration start time: {start:%H.%M.%S}",
                      f"Registration end time: {start + dt.timedelta(seconds=dur):%H.%M.%S}",
                      f"Seizure start time: {start + dt.timedelta(seconds=on):%H.%M.%S}",
                      f"Seizure end time: {start + dt.timedelta(seconds=off):%H.%M.%S}", ""]
    return "\n".join(lines) + "\n"


def siena(root, n_patients: int = 2, seed: int = 0, files_per_patient: int = 2,
          minutes_per_file: float = 5.0, overwrite: bool = False) -> Path:
    """Write the Siena demo; documented at its public name, :func:`bimsnn.data.demo.siena`."""
    root = Path(root)
    params = dict(n_patients=int(n_patients), seed=int(seed), files_per_patient=int(files_per_patient),
                  minutes_per_file=float(minutes_per_file))
    if not (1 <= params["n_patients"] <= 14 and params["files_per_patient"] >= 1
            and 2 <= params["minutes_per_file"] <= 60):
        raise DataError(root, f"bad demo parameters {params}")
    info_path = root / "DEMO_INFO.json"
    if info_path.is_file():
        try:
            info = json.loads(read_text(info_path, "demo marker"))
            old, done = info["params"], list(info["seizures"])
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(info_path, f"unreadable demo marker ({e}); delete it to rebuild") from e
        if old == params and all((root / f).is_file() for f in done):
            return root                                                # complete: idempotent
        if old != params and not overwrite:
            raise DataError(info_path, f"holds a demo with {old}, not {params}; "
                                       "use another root or overwrite=True")
        info_path.unlink()
    file_s = int(params["minutes_per_file"] * 60)
    n = file_s * _FS
    ix = {e: i for i, e in enumerate(_ELEC)}
    rows, seizures = [], {}
    for p in range(params["n_patients"]):
        pid = f"PN{p:02d}"
        rng = np.random.default_rng([params["seed"], p, 512])
        patient = dict(focus=_FOCI[p % len(_FOCI)], scale=rng.uniform(0.8, 1.25),
                       sz_scale=rng.uniform(0.8, 1.2), alpha_hz=rng.uniform(9.0, 11.0),
                       beta=rng.uniform(1.5, 2.0))
        (root / pid).mkdir(parents=True, exist_ok=True)
        start = dt.datetime(2016 + p, 1, 1, int(rng.integers(8, 20)), int(rng.integers(0, 60)))
        files = []
        for m in range(1, params["files_per_patient"] + 1):
            k = 2 if (p == 1 and m == 1 and file_s >= 240) else 1
            sz = _schedule(rng, k, file_s)
            if p == 0 and m == params["files_per_patient"]:    # registration across midnight
                midnight = dt.datetime.combine(start.date() + dt.timedelta(days=1), dt.time())
                start = midnight - dt.timedelta(seconds=sz[0][0] - int(rng.integers(5, 20)))
            name = f"{pid}-{m}.edf"
            v = _simulate(np.random.default_rng([params["seed"], p, m, 512]), n, patient, sz)
            v = resample_poly(v, FS // _FS, 1, axis=1)                          # (E, N) at 512 Hz
            eeg = np.stack([v[ix[_MODERN.get(c.upper(), c.upper())]] for c in _SIENA])
            _write_edf(root / pid / name, eeg, _ecg(rng, v.shape[1]), start)
            files.append((name, start, file_s, sz))
            seizures[f"{pid}/{name}"] = sz
            start += dt.timedelta(seconds=file_s + int(rng.integers(600, 7200)))
        _atomic_text(root / pid / f"Seizures-list-{pid}.txt", _seizure_list(pid, files))
        focus = _SIENA[[_MODERN.get(c.upper(), c.upper()) for c in _SIENA].index(patient["focus"])]
        side = "L" if int(focus[-1]) % 2 else "R"
        rows.append(f"{pid},{int(rng.integers(20, 70))},{'Male' if p % 2 else 'Female'},IAS,"
                    f"{focus[0]},{side},20,{sum(len(f[3]) for f in files)},"
                    f"{len(files) * file_s // 60}")
    _atomic_text(root / "subject_info.csv", "patient_id, age_years, gender, seizure, localization, "
                 "lateralization, eeg_channel, number_seizures, rec_time_minutes\n"
                 + "\n".join(rows) + "\n")
    _atomic_text(info_path, json.dumps(dict(params=params, seizures=seizures), indent=1))
    return root
