"""EEG loaders on the real shared data (Bonn, CHB-MIT summaries and EDF headers) and bad input."""

import datetime as dt

import edfio
import mne
import numpy as np
import pytest
import torch

from bimsnn.data import DataError, DataWarning
from bimsnn.data.eeg import (
    CHBMIT,
    Bonn,
    leave_one_patient_out,
    parse_chbmit_summary,
    patient_split,
    read_edf_header,
    recording_split,
)
from bimsnn.encoding import ADMEncoder, DeltaEncoder, RateEncoder, spike_rate

REAL_23 = ["FP1-F7", "F7-T7", "T7-P7", "P7-O1", "FP1-F3", "F3-C3", "C3-P3", "P3-O1", "FP2-F4",
           "F4-C4", "C4-P4", "P4-O2", "FP2-F8", "F8-T8", "T8-P8", "P8-O2", "FZ-CZ", "CZ-PZ",
           "P7-T7", "T7-FT9", "FT9-FT10", "FT10-T8", "T8-P8"]

# Read by eye from the real summaries (hand-checked truths).
CHB05 = {6: (417, 532), 13: (1086, 1196), 16: (2317, 2413), 17: (2451, 2571), 22: (2348, 2465)}
CHB08 = {2: (2670, 2841), 5: (2856, 3046), 11: (2988, 3122), 13: (2417, 2577), 21: (2083, 2347)}
CHB08_FILES = [2, 3, 4, 5, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 29]
# The shared stubs hold 2 s of noise while their real summaries list seizures minutes in:
# loading them needs the seizures clipped to the file (dropped here), which is done loudly.
STUBS = dict(seizures_outside="clip")


# --------------------------------------------------------------------------- CHB-MIT, real files
def test_chb05_summary_exact(shared_data):
    got = parse_chbmit_summary(shared_data / "eeg_formats/chbmit/chb05/chb05-summary.txt")
    want = {f"chb05_{i:02d}.edf": [CHB05[i]] if i in CHB05 else [] for i in range(1, 40)}
    assert list(got) == list(want) and got == want


def test_chb08_summary_exact_numbered_format(shared_data):
    got = parse_chbmit_summary(shared_data / "eeg_formats/chbmit/chb08/chb08-summary.txt")
    want = {f"chb08_{i:02d}.edf": [CHB08[i]] if i in CHB08 else [] for i in CHB08_FILES}
    assert list(got) == list(want) and got == want


def test_real_edf_headers_keep_duplicate_t8p8(shared_data):
    path = shared_data / "eeg_formats/chbmit/chb05/chb05_01.edf"
    h = read_edf_header(path)
    assert [lab for lab in h["labels"] if lab != "EDF Annotations"] == REAL_23
    assert h["sfreq"][0] == 256.0 and h["n_times"][0] == 512
    names = mne.io.read_raw_edf(path, verbose="error").ch_names
    assert names[14] == "T8-P8-0" and names[22] == "T8-P8-1"
    with pytest.warns(DataWarning, match="past the end"):
        ds = CHBMIT(shared_data / "eeg_formats/chbmit", patients=["chb05"], window_s=1.0, **STUBS)
    assert ds.channels == [c for i, c in enumerate(REAL_23) if i != 22]   # one T8-P8
    x, y, meta = ds[1]
    assert x.shape == (256, 22) and x.dtype == torch.float32 and y == 0
    assert meta == dict(patient="chb05", file="chb05_01.edf", start_s=1.0)
    raw = mne.io.read_raw_edf(path, preload=True, verbose="error").get_data()    # (23, 512) V
    with pytest.warns(DataWarning):
        ds = CHBMIT(shared_data / "eeg_formats/chbmit", patients=[5], window_s=2.0, normalize=None,
                    channels=["CZ-PZ", "FP1-F7", "T8-P8"], **STUBS)       # picked in this order
    np.testing.assert_allclose(ds[0][0].numpy().T, raw[[17, 0, 14]], rtol=1e-6, atol=1e-12)


def test_real_stub_splits_never_share_a_recording(shared_data):
    root = shared_data / "eeg_formats/chbmit"
    with pytest.raises(DataError, match="past the end of this 2 s recording") as e:
        CHBMIT(root)                                    # the default refuses the stubs
    assert e.value.path == root / "chb05" / "chb05_06.edf" and "chb05-summary.txt" in str(e.value)
    with pytest.warns(DataWarning):
        ds = CHBMIT(root, window_s=0.5, sfreq=128, l_freq=1.0, h_freq=40.0, notch_freq=60.0,
                    **STUBS)
    assert len(ds) == (39 + 20) * 4 and ds[0][0].shape == (64, 22)
    clipped = sorted(p.name for p, _ in ds.skipped)     # every file with a listed seizure
    assert clipped == sorted([f"chb05_{i:02d}.edf" for i in CHB05] +
                             [f"chb08_{i:02d}.edf" for i in CHB08])
    assert not any(ds.seizures.values()) and ds.labels.sum() == 0
    folds = leave_one_patient_out(ds)
    assert [p for p, _, _ in folds] == ["chb05", "chb08"]
    for _, tr, te in folds + [("x", *patient_split(ds, ["chb08"])), ("y", *recording_split(ds))]:
        rec = ds.meta["recording"].to_numpy()
        assert not set(rec[tr]) & set(rec[te]) and len(tr) + len(te) == len(ds)


# --------------------------------------------------------------------------- Bonn, real files
def test_bonn_all_segments_and_ictal_labels(shared_data):
    ds = Bonn(shared_data / "bonn", window_s=1.0, stride_s=1.0)
    assert ds.data.shape == (400, 4097)
    assert len(ds) == 400 * 23
    s_rows = ds.meta["set"] == "S"
    assert (ds.labels[s_rows] == 1).all() and (ds.labels[~s_rows] == 0).all()
    x, y, meta = ds[int(np.flatnonzero(s_rows)[0])]
    assert x.shape == (174, 1) and y == 1 and meta["set"] == "S"
    tr, te = recording_split(ds, test_size=0.25, seed=0)
    seg = ds.meta["segment"].to_numpy()
    assert not set(seg[tr]) & set(seg[te])
    assert ds.labels[te].sum() > 0 and ds.labels[tr].sum() > 0   # stratified


def test_bonn_encoder_rates_within_documented_bounds(shared_data):
    fs, theta = Bonn.FS, 0.25
    plain = Bonn(shared_data / "bonn", sets=("Z", "S"), window_s=2.0)
    for encoder in (ADMEncoder(theta), DeltaEncoder(theta)):
        ds = Bonn(shared_data / "bonn", sets=("Z", "S"), window_s=2.0, encoder=encoder)
        for k in range(0, len(ds), 37):
            spikes = ds[k][0]                                   # (T, 2)
            x = plain[k][0].double()
            tv = (x[1:] - x[:-1]).abs().sum().item()
            count = spikes.sum().item()
            assert count <= min(len(x), tv / theta + 1e-6)
            assert (spike_rate(spikes, fs) <= fs).all()
    # rate code: mean rate ≈ fs·p with p = the (clamped) sigmoid of the z-scored signal
    ds = Bonn(shared_data / "bonn", sets=("S",), window_s=5.0)
    x = torch.sigmoid(ds[0][0])
    spikes = RateEncoder()(x, generator=torch.Generator().manual_seed(0))
    expect = fs * x.mean().item()
    sd = fs * np.sqrt(0.25 / len(x))
    assert abs(spike_rate(spikes, fs).item() - expect) < 4 * sd


def test_bonn_accepts_upper_case_txt_and_rejects_nan(tmp_path):
    rng = np.random.default_rng(0)
    for s in ("Z", "S"):
        (tmp_path / s).mkdir()
        for i in range(2):
            np.savetxt(tmp_path / s / f"{s}{i:03d}.TXT", rng.normal(0, 50, 4097).round(), fmt="%d")
    ds = Bonn(tmp_path, sets=("Z", "S"), window_s=1.0, sfreq=100.0, l_freq=0.5, h_freq=40.0)
    assert ds.data.shape == (4, 2360) and ds.labels.tolist().count(1) == 2 * 23
    bad = tmp_path / "S" / "S001.TXT"
    bad.write_text("1\n2\nnan\n4\n")
    with pytest.raises(DataError, match="NaN") as e:
        Bonn(tmp_path, sets=("S",))
    assert e.value.path == bad
    with pytest.raises(DataError, match="upsampling"):
        Bonn(tmp_path, sets=("Z",), sfreq=500.0)


# --------------------------------------------------------------------------- bad CHB-MIT input
def _write(root, patient="chb01", n_files=1, seconds=8, summary_extra="",
           channels=("FP1-F7", "T8-P8", "T8-P8")):
    d = root / patient
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    lines = ["Data Sampling Rate: 256 Hz", ""]
    for m in range(1, n_files + 1):
        sig = [edfio.EdfSignal(rng.normal(0, 20, 256 * seconds), 256, label=c,
                               physical_range=(-800, 800)) for c in channels]
        edfio.Edf(sig, starttime=dt.time(10, 0)).write(d / f"{patient}_{m:02d}.edf")
        lines += [f"File Name: {patient}_{m:02d}.edf", "Number of Seizures in File: 1",
                  "Seizure Start Time: 2 seconds", "Seizure End Time: 5 seconds", ""]
    (d / f"{patient}-summary.txt").write_text("\n".join(lines) + summary_extra)
    return d


def test_small_chbmit_labels_and_margin(tmp_path):
    _write(tmp_path, seconds=10)
    ds = CHBMIT(tmp_path, window_s=1.0, ictal_overlap=0.5)
    assert ds.channels == ["FP1-F7", "T8-P8"]
    assert ds.labels.tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 0, 0]
    ds = CHBMIT(tmp_path, window_s=1.0, preictal_margin_s=1.5, postictal_margin_s=1.0)
    assert ds.meta["start_s"].tolist() == [2.0, 3.0, 4.0, 6.0, 7.0, 8.0, 9.0]


def test_channel_sets_that_change_between_files(tmp_path):
    _write(tmp_path, "chb01")
    _write(tmp_path, "chb02", channels=("FP1-F7", "F7-T7", "-"))
    assert CHBMIT(tmp_path, window_s=1.0).channels == ["FP1-F7"]          # intersection
    with pytest.raises(DataError, match="lacks channels") as e:
        CHBMIT(tmp_path, channels=["fp1-f7", "T8-P8"])
    assert e.value.path == tmp_path / "chb02" / "chb02_01.edf"
    with pytest.warns(DataWarning, match="lacks channels"):
        ds = CHBMIT(tmp_path, channels=["FP1-F7", "T8-P8"], missing_channels="skip", window_s=1.0)
    assert ds.skipped == [(tmp_path / "chb02" / "chb02_01.edf", "lacks channels ['T8-P8']")]
    assert set(ds.meta["patient"]) == {"chb01"} and ds[0][0].shape == (256, 2)


def test_disk_cache_matches_direct_load(tmp_path):
    _write(tmp_path / "data", seconds=6)
    kw = dict(window_s=2.0, sfreq=128.0, l_freq=1.0, h_freq=30.0)
    direct = CHBMIT(tmp_path / "data", **kw)
    cached = CHBMIT(tmp_path / "data", cache_dir=tmp_path / "cache", **kw)
    for k in range(len(direct)):
        torch.testing.assert_close(cached[k][0], direct[k][0])
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    again = CHBMIT(tmp_path / "data", cache_dir=tmp_path / "cache", **kw)
    torch.testing.assert_close(again[2][0], direct[2][0])       # read back from the memmap
    assert isinstance(again._cache[0], np.memmap)


def test_truncated_edf_names_file(tmp_path):
    d = _write(tmp_path)
    path = d / "chb01_01.edf"
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(DataError, match="truncated") as e:
        CHBMIT(tmp_path)
    assert e.value.path == path
    path.write_bytes(b"not an edf at all" * 20)
    with pytest.raises(DataError, match="corrupt") as e:
        CHBMIT(tmp_path)
    assert e.value.path == path


def test_summary_naming_missing_edf(tmp_path):
    d = _write(tmp_path, summary_extra="File Name: chb01_07.edf\nNumber of Seizures in File: 0\n")
    with pytest.raises(DataError, match="chb01_07.edf") as e:
        CHBMIT(tmp_path)
    assert e.value.path == d / "chb01-summary.txt" and "does not exist" in str(e.value)


@pytest.mark.parametrize("text, problem", [
    ("File Name: a.edf\nNumber of Seizures in File: 2\nSeizure Start Time: 1 seconds\n"
     "Seizure End Time: 2 seconds\n", "declares 2"),
    ("File Name: a.edf\nSeizure 1 Start Time: 9 seconds\nSeizure 1 End Time: 2 seconds\n", "<= start"),
    ("File Name: a.edf\nSeizure 1 Start Time: 9 seconds\n", "without end"),
    ("File Name: a.edf\nSeizure Start Time: soon\n", "malformed"),
    ("Data Sampling Rate: 256 Hz\n", "no 'File Name:'"),
])
def test_malformed_summary(tmp_path, text, problem):
    path = tmp_path / "chb99-summary.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=problem) as e:
        parse_chbmit_summary(path)
    assert e.value.path == path


def test_nan_samples_name_file(tmp_path, monkeypatch):
    _write(tmp_path)
    path = tmp_path / "chb01" / "chb01_01.edf"
    real = mne.io.read_raw_edf

    def with_nan(fname, **kw):          # EDF stores integers: NaN can only come from a reader
        raw = real(fname, **kw).load_data(verbose="error")
        data = raw.get_data()
        data[1, 300] = np.nan
        return mne.io.RawArray(data, raw.info, verbose="error")

    monkeypatch.setattr(mne.io, "read_raw_edf", with_nan)
    ds = CHBMIT(tmp_path, window_s=1.0)
    with pytest.raises(DataError, match="NaN") as e:
        ds[0]
    assert e.value.path == path and "T8-P8" in str(e.value)


@pytest.mark.parametrize("sfreq, problem", [(512.0, "upsampling"), (0.0, "> 0"), (-5.0, "> 0")])
def test_impossible_sampling_rate(tmp_path, sfreq, problem):
    _write(tmp_path)
    with pytest.raises(DataError, match=problem) as e:
        CHBMIT(tmp_path, sfreq=sfreq)
    assert e.value.path == tmp_path / "chb01" / "chb01_01.edf"
    with pytest.raises(DataError, match="Nyquist"):
        CHBMIT(tmp_path, h_freq=200.0)


def test_download_explains_how_to_get_data(tmp_path):
    with pytest.raises(DataError, match="physionet.org"):
        CHBMIT(tmp_path, download=True)
    with pytest.raises(DataError, match="datasets/README.md"):
        Bonn(tmp_path, download=True)
