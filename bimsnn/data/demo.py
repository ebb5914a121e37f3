"""Writers of small demo datasets in the real on-disk formats (CHB-MIT here, PTB-XL re-exported).

Symbols: E electrodes (19, 10-20 system), C bipolar channels, N samples, fs = 256 Hz,
τ = (t − onset)/duration seizure phase in [0, 1].

    python -m bimsnn.data.demo chbmit datasets/demo_chbmit [--patients 2 --files 3 --minutes 5]
    python -m bimsnn.data.demo ptbxl datasets/demo_ptbxl
    python -m bimsnn.data.demo siena datasets/demo_siena [--patients 2 --files 2 --minutes 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import numpy as np

from bimsnn.data.errors import DataError
from bimsnn.data.files import atomic_write, read_text

__all__ = ["chbmit", "ptbxl", "siena", "DEMO_CHANNELS"]

# 2-D scalp positions (x: left→right, y: back→front), one unit ≈ one 10-20 inter-electrode step.
_POS = {"FP1": (-1, 2), "FP2": (1, 2), "F7": (-2, 1), "F3": (-1, 1), "FZ": (0, 1), "F4": (1, 1),
        "F8": (2, 1), "T7": (-2, 0), "C3": (-1, 0), "CZ": (0, 0), "C4": (1, 0), "T8": (2, 0),
        "P7": (-2, -1), "P3": (-1, -1), "PZ": (0, -1), "P4": (1, -1), "P8": (2, -1),
        "O1": (-1, -2), "O2": (1, -2)}
_ELEC = list(_POS)
_XY = np.array([_POS[e] for e in _ELEC], dtype=float)                  # (E, 2)
#: The 18 CHB-MIT double-banana derivations plus the real files' second T8-P8 (channel 23).
DEMO_CHANNELS = ("FP1-F7", "F7-T7", "T7-P7", "P7-O1", "FP1-F3", "F3-C3", "C3-P3", "P3-O1",
                 "FP2-F4", "F4-C4", "C4-P4", "P4-O2", "FP2-F8", "F8-T8", "T8-P8", "P8-O2",
                 "FZ-CZ", "CZ-PZ", "T8-P8")
_FOCI = ("T7", "F8", "C3", "T8", "P7", "F7")
_FS = 256


# --------------------------------------------------------------------------- noise sources
def _spectral(rng, n_src: int, n: int, gain) -> np.ndarray:
    """Unit-variance Gaussian noise (n_src, n) whose amplitude spectrum is gain(f)."""
    f = np.fft.rfftfreq(n, 1 / _FS)
    spec = (rng.standard_normal((n_src, f.size)) + 1j * rng.standard_normal((n_src, f.size)))
    x = np.fft.irfft(spec * gain(f), n)
    return x / np.maximum(x.std(axis=1, keepdims=True), 1e-12)


def _pink(rng, n_src, n, beta=1.0):
    """1/f^β power spectrum (amplitude f^(−β/2)), flattened below 0.3 Hz."""
    return _spectral(rng, n_src, n, lambda f: np.where(f > 0, np.maximum(f, 0.3) ** (-beta / 2), 0))


def _band(rng, n_src, n, lo, hi):
    return _spectral(rng, n_src, n, lambda f: np.exp(-0.5 * ((f - (lo + hi) / 2) / ((hi - lo) / 2)) ** 4))


def _slow(rng, n, tau_s):
    """Smooth random modulation in [0, 1] with time scale tau_s."""
    x = _spectral(rng, 1, n, lambda f: np.exp(-0.5 * (f * tau_s) ** 2))[0]
    return 1 / (1 + np.exp(-2 * x))


def _spatial(centre, sigma) -> np.ndarray:
    """Gaussian weight of every electrode around a point (E,)."""
    return np.exp(-0.5 * ((_XY - np.asarray(centre)) ** 2).sum(1) / sigma ** 2)


def _spike_wave(u: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Spike-and-wave of phase u ∈ [0, 1): a ~12 ms-σ surface-negative spike, then a slow wave."""
    spike = -np.exp(-0.5 * ((u - 0.12) / np.clip(0.012 * f, 0.02, 0.2)) ** 2)
    wave = 0.55 * np.exp(-0.5 * ((u - 0.55) / 0.17) ** 2)
    return 1.6 * (spike + wave + 0.12)


# --------------------------------------------------------------------------- one recording
def _simulate(rng, n: int, patient: dict, seizures: list[tuple[float, float]]) -> np.ndarray:
    """Electrode potentials (E, N) in µV for one file."""
    E, t = len(_ELEC), np.arange(n) / _FS
    drowsy = _slow(rng, n, 25.0) ** 2 * rng.uniform(0.3, 1.0)         # vigilance, 0 = alert
    kernel = np.exp(-0.5 * ((_XY[:, None] - _XY[None]) ** 2).sum(-1))    # (E, E), 1-unit width
    bg_gain = np.ones(n)
    for _, off in seizures:                                            # post-ictal suppression
        after = t > off
        dt_ = t[after] - off
        bg_gain[after] -= 0.6 * (1 - np.exp(-dt_ / 1.0)) * np.exp(-dt_ / 20.0)
    common = kernel @ _pink(rng, E, n, patient["beta"])           # spatially correlated
    common /= common.std(axis=1, keepdims=True)
    v = patient["scale"] * bg_gain * (14 * common + 5 * _pink(rng, E, n, 1.5))
    # posterior alpha, blocked by drowsiness; drowsy delta/theta (overlaps the seizure band)
    alpha_w = np.exp(-0.5 * ((_XY[:, 1] + 2) / 0.9) ** 2)              # occipital maximum
    a = _band(rng, 2, n, patient["alpha_hz"] - 1, patient["alpha_hz"] + 1)
    left = np.clip(-_XY[:, 0], 0, 1)[:, None]
    v += 12 * alpha_w[:, None] * ((1 - left) * a[1] + left * a[0] + 0.3 * a[[0]] + 0.3 * a[[1]]) \
        * (1 - 0.85 * drowsy) * (0.6 + 0.8 * _slow(rng, n, 4.0))
    slow_w = _spatial((0, 0.5), 2.0)[:, None]
    post = sum(np.where(t > off, np.exp(-(t - off) / 40.0), 0.0) for _, off in seizures)
    v += 30 * slow_w * _band(rng, 1, n, 1.0, 5.0) * (drowsy + 0.8 * post) \
        + 8 * _band(rng, E, n, 1.0, 5.0) * drowsy
    _artefacts(rng, v, n, drowsy)
    for on, off in seizures:
        _seizure(rng, v, t, on, off, patient)
    _ieds(rng, v, t, patient, seizures)
    v += rng.uniform(0.5, 3.0, (E, 1)) * np.sin(2 * np.pi * 60 * t + rng.uniform(0, 6.3))
    return v


def _bump(v, rows_w, i0, shape):
    i1 = min(i0 + len(shape), v.shape[1])
    v[:, i0:i1] += rows_w[:, None] * shape[: i1 - i0]


def _artefacts(rng, v, n, drowsy):
    """Eye blinks (frontal), lateral eye movements, EMG bursts (temporal), electrode pops."""
    dur = n / _FS
    blink_w = np.array([1.0 if e in ("FP1", "FP2") else 0.3 if e in ("F3", "F4", "FZ", "F7", "F8")
                        else 0.0 for e in _ELEC])
    for t0 in rng.uniform(0, dur, rng.poisson(dur / 60 * 12)):
        if rng.random() < drowsy[int(t0 * _FS)]:
            continue                                                     # fewer blinks when drowsy
        s = rng.uniform(0.06, 0.12)
        k = np.arange(int(6 * s * _FS)) / _FS
        _bump(v, blink_w * rng.uniform(60, 200), int(t0 * _FS), np.exp(-0.5 * ((k - 3 * s) / s) ** 2))
    lat = np.clip(_XY[:, 0], -2, 2) / 2 * (_XY[:, 1] >= 1)
    for t0 in rng.uniform(0, dur, rng.poisson(dur / 60 * 3)):
        k = np.arange(int(1.5 * _FS)) / _FS
        look = 1 / (1 + np.exp(-(k - 0.2) / 0.03)) - 1 / (1 + np.exp(-(k - 1.1) / 0.05))
        _bump(v, lat * rng.choice([-1, 1]) * rng.uniform(40, 120), int(t0 * _FS), look)
    emg = _band(rng, len(_ELEC), n, 25, 110)
    for t0 in rng.uniform(0, dur, rng.poisson(dur / 60 * 1.5)):
        side = rng.choice([-2, 2])
        w = _spatial((side, rng.uniform(-0.5, 1)), 0.9)
        i0, m = int(t0 * _FS), int(rng.uniform(0.5, 4.0) * _FS)
        env = np.sin(np.linspace(0, np.pi, m)) ** 0.5 * rng.uniform(15, 70)
        i1 = min(i0 + m, n)
        v[:, i0:i1] += w[:, None] * emg[:, i0:i1] * env[: i1 - i0]
    for t0 in rng.uniform(0, dur, rng.poisson(dur / 60 * 0.4)):
        w = np.zeros(len(_ELEC))
        w[rng.integers(len(_ELEC))] = rng.choice([-1, 1]) * rng.uniform(50, 150)
        k = np.arange(int(1.5 * _FS)) / _FS
        _bump(v, w, int(t0 * _FS), np.exp(-k / 0.3))


def _seizure(rng, v, t, on, off, patient):
    """Evolving focal seizure: rhythmic ~7 Hz → 3 Hz spike-and-wave, growing and spreading."""
    i0, i1 = int(on * _FS), min(int(off * _FS), len(t))
    tt = t[i0:i1] - on
    L = off - on
    tau = tt / L
    f0, f1 = rng.uniform(6.0, 8.0), rng.uniform(2.5, 3.5)              # Hz, onset → late
    f = f0 + (f1 - f0) * tau ** 0.7
    f = f * (1 + 0.06 * (_slow(rng, i1 - i0, 2.0) - 0.5))              # frequency jitter
    phase = np.cumsum(f) / _FS                                         # cycles
    amp = patient["sz_scale"] * np.exp(rng.normal(np.log(90), 0.45))   # µV, seizure-to-seizure
    env = (0.15 + 0.85 * np.clip(tt / (rng.uniform(0.1, 0.3) * L), 0, 1)) * np.clip((L - tt) / 3.0, 0, 1)
    focus = _XY[_ELEC.index(patient["focus"])] + rng.normal(0, 0.3, 2)
    sigma = 0.7 + (rng.uniform(1.0, 2.5)) * np.clip(tt / (rng.uniform(0.3, 0.8) * L), 0, 1)
    dist = np.sqrt(((_XY - focus) ** 2).sum(1))                        # (E,)
    morph = np.clip((tau - 0.2) / 0.4, 0, 1)                           # sinusoid → spike-wave
    for e in range(len(_ELEC)):
        w = np.exp(-0.5 * dist[e] ** 2 / sigma ** 2)                   # spreads over time
        u = np.mod(phase - f * 0.015 * dist[e], 1.0)                   # 15 ms/unit propagation
        wave = (1 - morph) * np.sin(2 * np.pi * u) + morph * _spike_wave(u, f)
        v[e, i0:i1] += amp * env * w * wave
    if rng.random() < 0.5:                                              # ictal muscle artefact
        emg = _band(rng, len(_ELEC), i1 - i0, 25, 110)
        w = _spatial((np.sign(focus[0]) * 2, 0), 1.0)[:, None]
        v[:, i0:i1] += rng.uniform(10, 40) * w * emg * np.clip((tau - 0.5) * 4, 0, 1) \
            * np.clip((L - tt) / 3.0, 0, 1)


def _ieds(rng, v, t, patient, seizures):
    """Isolated interictal spike-and-wave discharges at the focus (~2 per minute)."""
    dur = len(t) / _FS
    w = _spatial(_XY[_ELEC.index(patient["focus"])], 0.8)
    k = np.arange(int(0.4 * _FS)) / _FS
    shape = _spike_wave(np.clip(k / 0.4, 0, 0.999), np.full(k.size, 2.5))
    for t0 in rng.uniform(0, dur, rng.poisson(dur / 60 * 2)):
        if not any(on - 5 < t0 < off + 5 for on, off in seizures):
            _bump(v, w * rng.uniform(40, 110), int(t0 * _FS), shape)


# --------------------------------------------------------------------------- files
def _schedule(rng, n_files: int, file_s: float, numbered: bool) -> list[list[tuple[int, int]]]:
    """Seizure (onset, offset) seconds per file: some files seizure-free, some with several."""
    counts = [0, 1, 2 if numbered else 1] + list(rng.integers(0, 2, max(0, n_files - 3)))
    counts = list(rng.permutation(counts[:n_files])) if n_files >= 2 else [1]
    out = []
    for k in counts:
        found = []
        while k > 0 and not found:                  # short files may not fit k seizures
            for _ in range(200):
                durs = rng.integers(20, 61, k)
                ons = np.sort(rng.integers(30, int(file_s) - 40, k))
                if np.all(np.diff(ons) > durs[:-1] + 60) and ons[-1] + durs[-1] <= file_s - 20:
                    found = [(int(a), int(a + d)) for a, d in zip(ons, durs)]
                    break
            k -= 0 if found else 1
        out.append(found)
    return out


def _write_edf(path: Path, bipolar: np.ndarray, start: dt.datetime) -> None:
    import edfio

    sig = [edfio.EdfSignal(np.clip(x, -800, 800), sampling_frequency=_FS, label=name,
                           physical_dimension="uV", physical_range=(-800, 800),
                           digital_range=(-32768, 32767))
           for name, x in zip(DEMO_CHANNELS, bipolar)]
    edf = edfio.Edf(sig, patient=edfio.Patient(), starttime=start.time(),
                    recording=edfio.Recording(startdate=start.date()), data_record_duration=1.0)
    with atomic_write(path) as tmp:        # unique temporary name: concurrent writers never clash
        edf.write(tmp)


def _summary(files: list[tuple[str, dt.datetime, float, list]], numbered: bool) -> str:
    lines = ["Data Sampling Rate: 256 Hz", "*" * 25, "", "Channels in EDF Files:", "*" * 22]
    lines += [f"Channel {i}: {c}" for i, c in enumerate(DEMO_CHANNELS, 1)] + [""]
    for name, start, dur, sz in files:
        end = start + dt.timedelta(seconds=dur)
        lines += [f"File Name: {name}", f"File Start Time: {start:%H:%M:%S}",
                  f"File End Time: {end:%H:%M:%S}", f"Number of Seizures in File: {len(sz)}"]
        for j, (a, b) in enumerate(sz, 1):
            tag = f"Seizure {j}" if numbered else "Seizure"
            lines += [f"{tag} Start Time: {a} seconds", f"{tag} End Time: {b} seconds"]
        lines.append("")
    return "\n".join(lines)


def _atomic_text(path: Path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def chbmit(root, n_patients: int = 2, seed: int = 0, files_per_patient: int = 3,
           minutes_per_file: float = 5.0, overwrite: bool = False) -> Path:
    """Write a seeded CHB-MIT-layout demo dataset and return ``root``.

    Layout as PhysioNet's: ``root/chbNN/chbNN_MM.edf`` (19 bipolar channels, 256 Hz,
    EDF through edfio with the real headers' ±800 µV physical range (16-bit digital range,
    the real stubs use −2048..2047), including CHB-MIT's duplicated T8-P8), ``root/chbNN/chbNN-summary.txt`` in the real format (chb01 in the older
    "Seizure Start Time:" style, later patients "Seizure 1 Start Time:"), ``RECORDS``,
    ``RECORDS-WITH-SEIZURES`` and ``DEMO_INFO.json`` (parameters and the true seizures,
    written last: its presence marks a complete dataset). Defaults: 2 patients × 3 files
    × 5 min = 30 min, ~18 MB, a few seconds. Each patient has a seizure-free file; numbered
    patients have a file with two seizures (20–60 s each).

    What it simulates: electrode potentials summed from spatially correlated 1/f^β noise
    (power spectrum, β = 1.5–2 per patient, plus a weaker independent 1/f^1.5 part),
    posterior alpha (9–11 Hz) blocked by drowsy spells that bring 1–5 Hz slowing; eye
    blinks and lateral eye movements (frontal), EMG bursts (temporal), electrode pops,
    60 Hz line noise; isolated interictal spike-and-wave at the patient's focus; and
    seizures that start focal as low-amplitude ~7 Hz rhythm, grow, slow to ~3 Hz
    spike-and-wave and spread over the scalp with 15 ms/electrode lags, sometimes with
    ictal EMG, followed by post-ictal suppression and slowing. Seizure amplitude varies
    ~±50 % between seizures, so weak seizures overlap drowsy slowing and artefacts: band
    power separates the classes well but not perfectly. Bipolar channels are differences
    of the electrode potentials, as in the real montage.

    What it is not: no neural-mass or volume-conduction model, no sleep architecture, no
    clinical semiology, no patient-specific seizure shape beyond the focus; every onset
    falls exactly on its annotated second. Results on it say a pipeline runs and learns, not how it does on
    CHB-MIT.

    Raises:
        DataError: root holds a demo written with other parameters (pass overwrite=True).
    """
    root = Path(root)
    params = dict(n_patients=int(n_patients), seed=int(seed), files_per_patient=int(files_per_patient),
                  minutes_per_file=float(minutes_per_file))
    if not (1 <= params["n_patients"] <= 24 and params["files_per_patient"] >= 1
            and 2 <= params["minutes_per_file"] <= 60):
        raise DataError(root, f"bad demo parameters {params}")
    info_path = root / "DEMO_INFO.json"
    if info_path.is_file():
        try:
            info = json.loads(read_text(info_path, "demo marker"))
            old, files = info["params"], list(info["seizures"])
        except DataError:
            raise
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(info_path, f"unreadable demo marker ({e}); delete it to rebuild") from e
        if old == params and all((root / f).is_file() for f in files):
            return root                                                # complete: idempotent
        if old != params and not overwrite:
            raise DataError(info_path, f"holds a demo with {old}, not {params}; "
                                       "use another root or overwrite=True")
        info_path.unlink()
    file_s = params["minutes_per_file"] * 60
    n = int(round(file_s * _FS))
    seizures, records = {}, []
    for p in range(params["n_patients"]):
        pid, numbered = f"chb{p + 1:02d}", p > 0
        rng = np.random.default_rng([params["seed"], p])
        patient = dict(focus=_FOCI[p % len(_FOCI)], scale=rng.uniform(0.8, 1.25),
                       sz_scale=rng.uniform(0.8, 1.2), alpha_hz=rng.uniform(9.0, 11.0),
                       beta=rng.uniform(1.5, 2.0))
        (root / pid).mkdir(parents=True, exist_ok=True)
        start = dt.datetime(2059, 1, 1) + dt.timedelta(days=p, seconds=int(rng.integers(0, 86400)))
        files = []
        for m, sz in enumerate(_schedule(rng, params["files_per_patient"], file_s, numbered), 1):
            name = f"{pid}_{m:02d}.edf"
            frng = np.random.default_rng([params["seed"], p, m])
            v = _simulate(frng, n, patient, sz)
            ix = {e: i for i, e in enumerate(_ELEC)}
            bipolar = np.stack([v[ix[c.split("-")[0]]] - v[ix[c.split("-")[1]]] for c in DEMO_CHANNELS])
            _write_edf(root / pid / name, bipolar, start)
            files.append((name, start, file_s, sz))
            seizures[f"{pid}/{name}"] = sz
            records.append(f"{pid}/{name}")
            start += dt.timedelta(seconds=file_s + int(rng.integers(5, 12)))
        _atomic_text(root / pid / f"{pid}-summary.txt", _summary(files, numbered))
    _atomic_text(root / "RECORDS", "\n".join(records) + "\n")
    _atomic_text(root / "RECORDS-WITH-SEIZURES", "\n".join(r for r in records if seizures[r]) + "\n")
    _atomic_text(info_path, json.dumps(dict(params=params, seizures=seizures), indent=1))
    return root


def ptbxl(root, **kw):
    """PTB-XL demo writer, re-exported from :mod:`bimsnn.data._demo_ptbxl` (imported lazily)."""
    from bimsnn.data._demo_ptbxl import ptbxl as _ptbxl

    return _ptbxl(root, **kw)


def siena(root, **kw) -> Path:
    """Write a seeded Siena-layout demo dataset and return ``root``.

    Layout as PhysioNet's ``siena-scalp-eeg``: ``root/PNxx/PNxx-M.edf`` (EDF through edfio,
    512 Hz, 1 s records, the 19 10-20 electrodes as ``"EEG Fp1"`` ... ``"EEG T6"`` in Siena's
    order and old names, then ``"EKG EKG"``, with the real headers' physical ranges),
    ``root/PNxx/Seizures-list-PNxx.txt`` in the real format (one "Seizure n" block per
    seizure, clock times hh.mm.ss), ``root/subject_info.csv``, and ``DEMO_INFO.json``
    (parameters and the true seizures in seconds from each file's start, written last: its
    presence marks a complete dataset). As in Siena every file holds a seizure (the lists
    name only such files); patient PN01's first file holds two when it is ≥ 4 min long.
    Patient PN00's last registration starts before midnight and its seizure after it, so
    the list's clock times wrap. Defaults: 2 patients × 2 files × 5 min, ~24 MB.

    Signals are those of :func:`bimsnn.data.demo.chbmit` (see there what it simulates and
    what not) at 256 Hz, upsampled ×2 (nothing above 128 Hz), as referential potentials.

    Parameters and defaults: ``siena(root, n_patients=2, seed=0, files_per_patient=2,
    minutes_per_file=5.0, overwrite=False)``; written by :mod:`bimsnn.data._demo_siena`
    (imported lazily).

    Raises:
        DataError: root holds a demo written with other parameters (pass overwrite=True).
    """
    from bimsnn.data._demo_siena import siena as _siena

    return _siena(root, **kw)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bimsnn.data.demo", description=__doc__.split("\n")[0])
    ap.add_argument("dataset", choices=["chbmit", "ptbxl", "siena"])
    ap.add_argument("root")
    ap.add_argument("--patients", type=int, default=2)
    ap.add_argument("--files", type=int, default=None, help="default 3 (chbmit), 2 (siena)")
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overwrite", action="store_true")
    a = ap.parse_args(argv)
    if a.dataset == "chbmit":
        out = chbmit(a.root, n_patients=a.patients, seed=a.seed, files_per_patient=a.files or 3,
                     minutes_per_file=a.minutes, overwrite=a.overwrite)
    elif a.dataset == "siena":
        out = siena(a.root, n_patients=a.patients, seed=a.seed, files_per_patient=a.files or 2,
                    minutes_per_file=a.minutes, overwrite=a.overwrite)
    else:
        out = ptbxl(a.root, seed=a.seed, overwrite=a.overwrite)
    print(out)


if __name__ == "__main__":
    main()
