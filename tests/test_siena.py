"""Siena Scalp EEG lists and dataset (real shared files and our demo), any-EDF windows, and
the annotation finder ``seizures_for`` in both layouts."""

import datetime as dt
import json
import re

import edfio
import mne
import numpy as np
import pytest

from bimsnn.data import (
    DataError,
    DataWarning,
    EDFRecordings,
    Siena,
    demo,
    parse_seizure_list,
    seizures_for,
)

# Seconds from registration start, worked out by hand from the real lists' clock strings:
# e.g. PN00-1 registration 19.39.33, seizure 19.58.36–19.59.46: 19 min 3 s = 1143 s, +70 s.
PN00 = {"PN00-1.edf": [(1143.0, 1213.0)],           # 19.39.33 | 19.58.36–19.59.46
        "PN00-2.edf": [(1220.0, 1274.0)],           # 02.18.17 | 02.38.37–02.39.31
        "PN00-3.edf": [(765.0, 4425.0)],            # 18.15.44 | 18.28.29–19.29.29 (as written)
        "PN00-4.edf": [(1006.0, 1080.0)],           # 20.51.43 | 21.08.29–21.09.43
        "PN00-5.edf": [(904.0, 971.0)]}             # 22.22.04 | 22.37.08–22.38.15
PN16 = {"PN16-1.edf": [(7184.0, 7307.0)],           # 20.45.21 | 22.45.05–22.47.08: 1 h 59 m 44 s
        "PN16-2.edf": [(8574.0, 8681.0)]}           # 00.53.55 | 03.16.49–03.18.36: 2 h 22 m 54 s
PN00_3_REG_S = 2489.0                               # 18.15.44 → 18.57.13 = 41 min 29 s
CLIP = dict(seizures_outside="clip")


def write_edf(path, start="10.00.00", seconds=4, labels=("EEG Fp1", "EEG Cz", "EKG EKG"), fs=512):
    """A small EDF in Siena's style: channel k holds the constant-slope ramp k + t."""
    t = np.arange(seconds * fs) / fs
    sig = [edfio.EdfSignal(k + t, sampling_frequency=fs, label=lab, physical_dimension="uV",
                           physical_range=(-100, 100)) for k, lab in enumerate(labels)]
    h, m, s = map(int, start.split("."))
    edfio.Edf(sig, starttime=dt.time(h, m, s), recording=edfio.Recording(startdate=dt.date(2016, 1, 1)),
              data_record_duration=1.0).write(path)
    return path


def write_list(path, blocks, head="PNxx\n\nData Sampling Rate: 512 Hz\n\n"):
    path.write_text(head + "\n\n".join(blocks) + "\n")
    return path


def block(name, reg, sz, n=1):
    return (f"Seizure n {n}\nFile name: {name}\nRegistration start time: {reg[0]}\n"
            f"Registration end time: {reg[1]}\nSeizure start time: {sz[0]}\nSeizure end time: {sz[1]}")


# --------------------------------------------------------------------------- real lists
def test_real_pn16_list_exact(shared_data):
    got = parse_seizure_list(shared_data / "eeg_formats/siena/PN16/Seizures-list-PN16.txt")
    assert list(got) == list(PN16) and got == PN16        # "(in sleep):", "time:03.18.36", CRs


def test_real_pn00_list_as_written_and_seizure_3_error(shared_data):
    lst = shared_data / "eeg_formats/siena/PN00/Seizures-list-PN00.txt"
    assert parse_seizure_list(lst, seizures_outside="ignore") == PN00
    with pytest.raises(DataError, match=r"PN00-3\.edf: seizure 3 .*19\.29\.29.*18\.57\.13") as e:
        parse_seizure_list(lst)
    assert e.value.path == lst
    with pytest.warns(DataWarning, match="seizure 3"):
        clipped = parse_seizure_list(lst, seizures_outside="clip")
    assert clipped == {**PN00, "PN00-3.edf": [(765.0, PN00_3_REG_S)]}


# --------------------------------------------------------------------------- list format
def test_midnight_wrap_variants_and_inherited_registration(tmp_path):
    lst = write_list(tmp_path / "Seizures-list-PN99.txt", [
        block("PN99-1.edf ", ("23.50.00", " 00.20.00"), ("23.59.30 ", "00.01.10")),
        "Seizure n 2 (in sleep):\nFile name: PN99-1.edf\nStart time: 00:10:00\nEnd time:00.11.05",
        block("PN99-2.edf", ("21.00.00", "08.00.00"), ("0 3.00.00", "03.00.30"), 3)])
    assert parse_seizure_list(lst) == {
        "PN99-1.edf": [(570.0, 670.0), (1200.0, 1265.0)],  # 9 min 30 s, 20 min after 23.50.00
        "PN99-2.edf": [(21600.0, 21630.0)]}                  # 6 h after 21.00.00


@pytest.mark.parametrize("blocks, match", [
    ([block("a.edf", ("10.00.00", "11.00.00"), ("09.59.00", "10.01.00"))], r"seizure 1 .*outside"),
    ([block("a.edf", ("10.00.00", "11.00.00"), ("10.30.00", "10.29.00"))], "does not end after"),
    ([block("a.edf", ("10.00.00", "11.00.00"), ("10.61.00", "10.62.00"))], r"line \d+: '10\.61\.00'"),
    (["Seizure n 1\nSeizure start time: 10.00.00\nSeizure end time: 10.01.00"], "before any 'File name"),
    ([block("a.edf", ("10.00.00", "11.00.00"), ("10.10.00", "10.20.00")),
      block("a.edf", ("10.00.05", "11.00.00"), ("10.30.00", "10.31.00"), 2)], "contradicts"),
    ([block("a.edf", ("10.00.00", "11.00.00"), ("10.10.00", "10.20.00")),
      block("a.edf", ("10.00.00", "11.00.00"), ("10.15.00", "10.31.00"), 2)], "overlap"),
    (["File name: a.edf\nRegistration start time: 10.00.00\nSeizure start time: 10.01.00\n"
      "Seizure end time: 10.02.00"], "no 'Registration end time'"),
    (["File name: a.edf\nRegistration start time: 10.00.00\nRegistration end time: 11.00.00\n"
      "Seizure start time: 10.01.00"], "start without end"),
])
def test_bad_lists_name_the_file_and_problem(tmp_path, blocks, match):
    lst = write_list(tmp_path / "Seizures-list-PN98.txt", blocks)
    with pytest.raises(DataError, match=match) as e:
        parse_seizure_list(lst)
    assert e.value.path == lst


# --------------------------------------------------------------------------- real EDF stubs
def test_real_stubs_seizure_past_2s_edf_is_named(shared_data):
    root = shared_data / "eeg_formats/siena"
    with pytest.raises(DataError, match=r"7184–7307 s past the end of this 2 s") as e:
        Siena(root, patients=["PN16"])
    assert e.value.path == root / "PN16/PN16-1.edf"
    with pytest.raises(DataError, match="seizure 3") as e:   # the list is checked first
        Siena(root)
    assert e.value.path.name == "Seizures-list-PN00.txt"


def test_real_stubs_clipped_load_eeg_channels_only(shared_data):
    root = shared_data / "eeg_formats/siena"
    with pytest.warns(DataWarning):
        ds = Siena(root, window_s=1.0, **CLIP)
    assert len(ds.files) == 7 and all(sz == [] for sz in ds.seizures.values())
    reasons = [r for _, r in ds.skipped]              # PN00-3 to its registration, all 7 to 2 s
    assert len(reasons) == 8 and "clipped to the registration" in reasons[0]
    assert len(ds.channels) == 29 and ds.channels[:3] == ["FP1", "F3", "C3"]
    assert "EKG EKG" not in ds.channels and ds.sfreq == 512.0
    assert ds.labels.sum() == 0 and ds[0][0].shape == (512, 29)


def test_real_stub_channels_either_form_pick_the_right_signal(shared_data):
    root = shared_data / "eeg_formats/siena"
    with pytest.warns(DataWarning):
        ds = Siena(root, patients=[16], channels=["EEG Fp2", "t3", "hr"], window_s=1.0,
                   normalize=None, **CLIP)
    assert ds.channels == ["FP2", "T3", "HR"]
    x, y, meta = ds[0]                                # PN16 stores Fp2 as signal 31, T3 as 39
    raw = mne.io.read_raw_edf(root / "PN16/PN16-1.edf", verbose="error")
    want = raw.get_data(picks=["EEG FP2", "EEG T3", "HR"])[:, :512].T
    assert meta["file"] == "PN16-1.edf" and np.allclose(x.numpy(), want, atol=1e-9)
    with pytest.raises(DataError, match=r"PN16-1\.edf.*lacks channels \['C7'\]"), \
            pytest.warns(DataWarning):
        Siena(root, patients=[16], channels=["C7"], window_s=1.0, **CLIP)


# --------------------------------------------------------------------------- generated demo
def test_demo_wraps_midnight_and_loads_ictal_where_listed(tmp_path):
    root = demo.siena(tmp_path / "siena", n_patients=1, files_per_patient=1, minutes_per_file=2)
    lst = (root / "PN00/Seizures-list-PN00.txt").read_text()
    times = dict(re.findall(r"^(Registration start|Seizure start) time: (\d\d)\.", lst, re.M))
    assert times == {"Registration start": "23", "Seizure start": "00"}
    truth = json.loads((root / "DEMO_INFO.json").read_text())["seizures"]
    assert parse_seizure_list(root / "PN00/Seizures-list-PN00.txt") == {
        "PN00-1.edf": [tuple(map(float, s)) for s in truth["PN00/PN00-1.edf"]]}
    edf = edfio.read_edf(root / "PN00/PN00-1.edf")
    assert edf.signals[0].label == "EEG Fp1" and edf.signals[0].sampling_frequency == 512
    assert f"{edf.starttime:%H.%M.%S}" in lst

    ds = Siena(root, window_s=2.0, normalize=None)             # volts: seizures are larger
    (on, off), = truth["PN00/PN00-1.edf"]
    t0 = ds.meta["start_s"].to_numpy()
    overlap = np.clip(np.minimum(t0 + 2, off) - np.maximum(t0, on), 0, None)
    assert ds.sfreq == 512.0 and len(ds.channels) == 19 and "EKG EKG" not in ds.channels
    assert (ds.labels == (overlap >= 1.0)).all() and ds.labels.sum() >= (off - on) // 2
    x = np.stack([ds[i][0].numpy() for i in range(len(ds))])   # (W, T, C)
    power = (x[:, :, ds.channels.index("T3")] ** 2).mean(1)    # PN00's focus: T7, Siena's T3
    assert power[ds.labels == 1].mean() > 3 * power[ds.labels == 0].mean()
    assert seizures_for(root / "PN00/PN00-1.edf") == [(float(on), float(off))]


def test_start_time_mismatch_and_unlisted_edf_are_loud(tmp_path):
    d = tmp_path / "PN01"
    d.mkdir()
    write_edf(d / "PN01-1.edf", start="10.00.00")
    write_edf(d / "PN01-2.edf", start="12.00.00")
    write_list(d / "Seizures-list-PN01.txt",
               [block("PN01-1.edf", ("10.00.03", "10.00.07"), ("10.00.04", "10.00.06"))])
    with pytest.warns(DataWarning) as rec:
        ds = Siena(tmp_path, window_s=1.0, stride_s=0.5)
    msgs = " | ".join(str(w.message) for w in rec)
    assert "header starts at 10.00.00" in msgs and "PN01-2.edf: not named" in msgs
    assert ds.seizures == {d / "PN01-1.edf": [(1.0, 3.0)]}
    (d / "PN01-2.edf").unlink()
    with pytest.raises(DataError, match="header starts at"):
        Siena(tmp_path, window_s=1.0, strict=True)


def test_known_list_typo_resolves_to_the_edf(tmp_path):
    d = tmp_path / "PN06"
    d.mkdir()
    write_edf(d / "PN06-1.edf")
    write_list(d / "Seizures-list-PN06.txt",
               [block("PNO6-1.edf", ("10.00.00", "10.00.04"), ("10.00.01", "10.00.03"))])
    assert seizures_for(d / "PN06-1.edf") == [(1.0, 3.0)]
    assert Siena(tmp_path, window_s=1.0).files == [d / "PN06-1.edf"]


# --------------------------------------------------------------------------- any EDF
def test_edf_recordings_channel_list_and_seizures(shared_data, tmp_path):
    p = shared_data / "eeg_formats/siena/PN00/PN00-1.edf"
    ds = EDFRecordings([p], ["EEG Fp1", "cz"], seizures={p: [(1.2, 2.0)]}, window_s=1.0,
                       stride_s=0.5)
    assert ds.channels == ["FP1", "CZ"] and ds.sfreq == 512.0
    assert ds.labels.tolist() == [0, 0, 1] and ds[2][0].shape == (512, 2)
    q = write_edf(tmp_path / "x.edf", labels=("EEG Fp1", "EEG C3"))
    ds = EDFRecordings([p, q], ["FP1"], window_s=1.0, sfreq=256)
    assert ds.labels.sum() == 0 and ds[0][0].shape == (256, 1) and len(ds.files) == 2


def test_edf_recordings_bad_input(shared_data, tmp_path):
    p = shared_data / "eeg_formats/siena/PN00/PN00-1.edf"
    chb = shared_data / "eeg_formats/chbmit/chb05/chb05_01.edf"
    with pytest.raises(DataError, match=r"lacks channels \['FP1'\]") as e:
        EDFRecordings([p, chb], ["FP1"], window_s=1.0)
    assert e.value.path == chb
    with pytest.raises(DataError, match="past the end of this 2 s") as e:
        EDFRecordings(p, ["FP1"], seizures={p: [(1.0, 3.0)]}, window_s=1.0)
    assert e.value.path == p
    with pytest.raises(DataError, match="not among the paths"):
        EDFRecordings([p], ["FP1"], seizures={chb: []}, window_s=1.0)
    with pytest.raises(DataError, match="onset < offset"):
        EDFRecordings([p], ["FP1"], seizures={p: [(1.0, 0.5)]}, window_s=1.0)
    with pytest.raises(DataError, match="no such EDF"):
        EDFRecordings([tmp_path / "nope.edf"], ["FP1"])


# --------------------------------------------------------------------------- seizures_for
def test_seizures_for_both_real_layouts(shared_data):
    chb = shared_data / "eeg_formats/chbmit/chb05"
    siena = shared_data / "eeg_formats/siena"
    assert seizures_for(chb / "chb05_01.edf") == []                       # listed, no seizure
    assert seizures_for(chb / "chb05_06.edf", seizures_outside="ignore") == [(417.0, 532.0)]
    with pytest.raises(DataError, match="417–532 s past the end") as e:   # 2 s stub
        seizures_for(chb / "chb05_06.edf")
    assert e.value.path == chb / "chb05_06.edf"
    with pytest.warns(DataWarning, match="clipped"):
        assert seizures_for(chb / "chb05_06.edf", seizures_outside="clip") == []
    assert seizures_for(siena / "PN16/PN16-2.edf", seizures_outside="ignore") == PN16["PN16-2.edf"]
    assert seizures_for(siena / "PN00/PN00-1.edf", seizures_outside="ignore") == PN00["PN00-1.edf"]
    assert seizures_for(siena / "PN00/PN00-3.edf", seizures_outside="ignore") == PN00["PN00-3.edf"]
    with pytest.raises(DataError, match="seizure 3") as e:                # its own entry is wrong
        seizures_for(siena / "PN00/PN00-3.edf")
    assert e.value.path.name == "Seizures-list-PN00.txt"


def test_seizures_for_unannotated_is_none(tmp_path):
    p = write_edf(tmp_path / "lone.edf")
    assert seizures_for(p) is None
    write_list(tmp_path / "Seizures-list-PN97.txt",
               [block("other.edf", ("10.00.00", "10.00.04"), ("10.00.01", "10.00.03"))])
    assert seizures_for(p) is None                     # a Siena list names only seizure files
