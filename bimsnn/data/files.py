"""Files on disk: strict UTF-8 text, atomic writes, verified downloads, safe archive extraction.

Every failure is a :class:`~bimsnn.data.DataError` naming the file.

- :func:`read_text` refuses text that is not UTF-8 and names the offending byte;
- :func:`atomic_write` writes under a unique temporary name beside the target and renames it
  into place, so concurrent writers (DDP ranks) never see or clobber half a file;
- :func:`fetch` downloads an archive unless present and checks its SHA-256 either way;
- :func:`extract_tar` extracts through Python's ``tarfile`` ``"data"`` filter (no absolute
  paths, no ``..``, no links or devices pointing outside) into a temporary folder, then
  renames the result into place.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tarfile
import uuid
from pathlib import Path

from bimsnn.data.errors import DataError

__all__ = ["read_text", "atomic_write", "sha256sum", "fetch", "extract_tar"]


def read_text(path: str | Path, what: str = "text file") -> str:
    """Contents of ``path`` decoded as UTF-8 (a leading byte-order mark is dropped).

    >>> import tempfile; p = Path(tempfile.mkdtemp()) / "list.txt"
    >>> _ = p.write_bytes(b"caf\\xe9\\n")
    >>> read_text(p, "split list")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    bimsnn.data.errors.DataError: .../list.txt: split list is not UTF-8: byte 0xe9 at offset 3 ...
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(path, f"cannot read {what} ({err.strerror or err})") from err
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise DataError(path, f"{what} is not UTF-8: byte 0x{data[err.start]:02x} at offset "
                              f"{err.start} (line {line}); re-encode it as UTF-8") from None


@contextlib.contextmanager
def atomic_write(path: str | Path):
    """Yield a unique temporary path beside ``path``; rename it onto ``path`` on success.

    The temporary name holds the process id and a random part and keeps ``path``'s suffix
    (``np.save`` appends ``.npy`` otherwise). On an exception it is removed and ``path`` is
    untouched. ``os.replace`` is atomic within one file system.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def sha256sum(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, archive: str | Path, sha256: str) -> Path:
    """Download ``url`` to ``archive`` unless it is there; check its SHA-256 in both cases.

    Raises:
        DataError: the download failed, or the checksum differs from the published one.
    """
    archive = Path(archive)
    if not archive.is_file():
        from torch.hub import download_url_to_file

        try:
            with atomic_write(archive) as tmp:
                download_url_to_file(url, str(tmp), progress=True)
        except OSError as err:  # urllib's URLError and HTTPError are OSErrors
            raise DataError(archive, f"download from {url} failed ({err})") from err
    got = sha256sum(archive)
    if got != sha256:
        raise DataError(archive, f"SHA-256 {got} differs from the published {sha256} "
                                 f"({url}): corrupt or tampered archive; delete it to download again")
    return archive


def extract_tar(archive: str | Path, dest: str | Path, member_dir: str = "") -> Path:
    """Extract ``archive`` (or its folder ``member_dir``) to a new folder ``dest``.

    Members pass through ``tarfile``'s ``"data"`` filter, which refuses absolute names,
    ``..`` components, links that leave the destination and device files. Extraction goes to
    a temporary folder beside ``dest`` that is renamed into place only when complete.

    Raises:
        DataError: unsafe member (named), unreadable archive, or no ``member_dir`` in it.
    """
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        raise DataError(dest, f"already exists; not extracting {archive.name} over it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.extract")
    try:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
        except tarfile.FilterError as err:
            raise DataError(archive, f"unsafe member {err.tarinfo.name!r} refused ({err}); "
                                     "nothing was extracted") from err
        except (tarfile.TarError, EOFError, OSError) as err:
            raise DataError(archive, f"unreadable archive ({type(err).__name__}: {err})") from err
        src = tmp / member_dir if member_dir else tmp
        if not src.is_dir():
            raise DataError(archive, f"has no folder {member_dir!r}")
        os.replace(src, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
