"""Files: the one atomic writer, and the versioned archive format (``.npz`` + JSON manifest, no pickles).

Every file nsi-widgets writes (indexes, checkpoints, dissection results, reports) goes through
:func:`atomic_write`: a temporary file in the target's folder (named after the target and the
writing process's id), flushed and fsynced, given the usual permissions, renamed into place, and the
folder fsynced. A crash, ``kill -9`` or a full disk leaves the previous file, never a half-written
one; temporary files left by killed processes are removed by the next write into that folder. A
read-only target (no write permission bits, which even root respects here) is refused, not replaced.

An *archive* is an uncompressed ``.npz``: a ``manifest`` member holding UTF-8 JSON (``format`` and
``version`` first) and one member per array. :func:`read_archive` validates before it allocates:
each member's ``.npy`` header against the bytes really stored (a crafted header cannot make it
allocate gigabytes), no object dtypes (nothing is unpickled), and the manifest's format and version.
Every problem is an :class:`~nsi_widgets.core.errors.IndexFileError` naming the file.
"""
from __future__ import annotations

import io
import json
import os
import re
import secrets
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import IndexFileError, OutputError

_TMP_SUFFIX = ".nsi-tmp"
_MAX_MANIFEST_BYTES = 64 * 2**20


def default_file_mode() -> int:
    """The permissions a plainly created file gets (``0o666`` less the umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def is_read_only(path: Path) -> bool:
    """Whether an existing file has no write permission bit (checked on the mode, so root too)."""
    try:
        return not (path.stat().st_mode & 0o222)
    except FileNotFoundError:
        return False


def check_output_path(path, *, overwrite: bool = True, what: str = "file") -> Path:
    """Check before long work that ``path`` can be written; return it as a :class:`~pathlib.Path`.

    Raises :class:`OutputError` for a missing folder, a folder that is not writable, a directory in
    the file's place, a read-only file, or an existing file when ``overwrite`` is False.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"{what} {str(path)!r} is a directory; give a file name")
    if not folder.is_dir():
        raise OutputError(f"cannot write {what} {str(path)!r}: the folder {str(folder)!r} does not exist "
                          "(create it first)")
    if not os.access(folder, os.W_OK | os.X_OK) or not (folder.stat().st_mode & 0o222):
        raise OutputError(f"cannot write {what} {str(path)!r}: the folder {str(folder)!r} is not writable")
    if path.exists():
        if is_read_only(path):
            raise OutputError(f"{what} {str(path)!r} is read-only; it is not replaced (make it writable or "
                              "choose another name)")
        if not overwrite:
            raise OutputError(f"{what} {str(path)!r} exists; pass --force (or overwrite=True) to replace it, "
                              "or choose another name")
    return path


def atomic_write(path, write: Callable[[io.BufferedWriter], None], *, what: str = "file") -> Path:
    """Write a file atomically: ``write(f)`` fills a temporary file that is then renamed to ``path``.

    Missing parent folders are created. Raises :class:`OutputError` (the old file untouched) when
    the target is read-only, the folder cannot be written, or the disk is full.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot write {what} {str(path)!r}: cannot create its folder ({err.strerror})") from None
    check_output_path(path, overwrite=True, what=what)
    remove_orphaned_temp_files(path.parent)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{_TMP_SUFFIX}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and not isinstance(err, OutputError):
            raise OutputError(f"cannot write {what} {str(path)!r}: {err.strerror or err} "
                              f"(the previous file, if any, is unchanged)") from None
        raise
    return path


def remove_orphaned_temp_files(folder: Path) -> int:
    """Delete temporary files in ``folder`` left by processes that no longer run; return how many."""
    pattern = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{8}" + re.escape(_TMP_SUFFIX) + "$")
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        match = pattern.match(entry.name)
        if match and not _process_alive(int(match.group(1))):
            try:
                os.unlink(entry.path)
                removed += 1
            except OSError:
                pass
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Archives
# ---------------------------------------------------------------------------------------------
def write_archive(path, manifest: dict, arrays: dict[str, np.ndarray], *, what: str = "file") -> Path:
    """Write ``manifest`` (JSON) and ``arrays`` as one uncompressed ``.npz``, atomically."""
    payload = {"manifest": np.frombuffer(json.dumps(manifest, ensure_ascii=False).encode("utf-8"), dtype=np.uint8)}
    for name, value in arrays.items():
        value = np.asarray(value)
        if value.dtype.hasobject:
            raise TypeError(f"array {name!r} has an object dtype; archives hold plain arrays only")
        payload[name] = np.ascontiguousarray(value)
    return atomic_write(path, lambda f: np.savez(f, **payload), what=what)


class Archive:
    """An opened archive: ``manifest`` (dict) and validated arrays by name (:meth:`array`)."""

    def __init__(self, path: Path, zf: zipfile.ZipFile, manifest: dict, what: str):
        self.path, self._zip, self.manifest, self.what = path, zf, manifest, what
        self._names = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}

    def __contains__(self, name: str) -> bool:
        return name in self._names

    def array(self, name: str, *, dtype_kind: str | None = None, shape: tuple | None = None,
              ndim: int | None = None) -> np.ndarray:
        """Read array ``name``; check its dtype kind (``"f"``, ``"i"``, ``"u"``, ``"b"``, several letters
        allowed), number of dimensions and shape (``None`` entries match any size)."""
        if name not in self._names:
            raise self.error(f"array {name!r} is missing")
        value = _read_member(self._zip, name + ".npy", lambda m: self.error(f"array {name!r}: {m}"))
        if dtype_kind is not None and value.dtype.kind not in dtype_kind:
            raise self.error(f"array {name!r} has dtype {value.dtype}, expected kind {dtype_kind!r}")
        if ndim is not None and value.ndim != ndim:
            raise self.error(f"array {name!r} has shape {value.shape}, expected {ndim} dimensions")
        if shape is not None and (value.ndim != len(shape) or any(
                s is not None and s != v for s, v in zip(shape, value.shape))):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise self.error(f"array {name!r} has shape {value.shape}, expected {want}")
        return value

    def error(self, message: str) -> IndexFileError:
        return IndexFileError(f"{str(self.path)!r} is a damaged {self.what}: {message}")

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_archive(path, fmt: str, max_version: int, *, what: str = "file") -> Archive:
    """Open an archive written by :func:`write_archive` whose manifest says ``format == fmt``.

    Raises
    ------
    FileNotFoundError
        No such file.
    IndexFileError
        Not an archive, another format, a newer version, or a damaged file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no {what} file at {str(path)!r}")
    if path.is_dir():
        raise IndexFileError(f"{str(path)!r} is a directory, not an nsi-widgets {what}")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise IndexFileError(f"{str(path)!r} is not an nsi-widgets {what} (not an .npz archive: {err})") from None
    try:
        if "manifest.npy" not in zf.namelist():
            raise IndexFileError(f"{str(path)!r} is an .npz file but not an nsi-widgets {what} (no manifest)")
        raw = _read_member(zf, "manifest.npy",
                           lambda m: IndexFileError(f"{str(path)!r}: the manifest is damaged ({m})"),
                           max_bytes=_MAX_MANIFEST_BYTES)
        try:
            manifest = json.loads(raw.tobytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
            raise IndexFileError(f"{str(path)!r}: the manifest is damaged ({type(err).__name__})") from None
        if not isinstance(manifest, dict):
            raise IndexFileError(f"{str(path)!r}: the manifest is damaged (not a JSON object)")
        if manifest.get("format") != fmt:
            raise IndexFileError(f"{str(path)!r} is not an nsi-widgets {what} (format {manifest.get('format')!r})")
        version = manifest.get("version")
        if not isinstance(version, int) or version < 1:
            raise IndexFileError(f"{str(path)!r}: the manifest is damaged (version {version!r})")
        if version > max_version:
            raise IndexFileError(f"{str(path)!r} uses {what} format version {version}, newer than this "
                                 f"nsi-widgets reads ({max_version}); upgrade nsi-widgets to open it")
    except BaseException:
        zf.close()
        raise
    return Archive(path, zf, manifest, what)


def _read_member(zf: zipfile.ZipFile, member: str, error: Callable[[str], Exception],
                 max_bytes: int | None = None) -> np.ndarray:
    """Read one ``.npy`` member after checking its header against the bytes it really holds."""
    info = zf.getinfo(member)
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > 200 * max(1, info.compress_size) + 2**20:
        raise error("compressed beyond any plausible ratio (a decompression bomb?)")
    try:
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unknown .npy version {version}")
            if dtype.hasobject:
                raise ValueError("object arrays are refused (they would need unpickling)")
            count = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
            nbytes = count * dtype.itemsize
            if nbytes != info.file_size - f.tell() or count < 0:
                raise ValueError(f"its header claims shape {shape} of {dtype} ({nbytes} bytes) but "
                                 f"{info.file_size - f.tell()} bytes are stored")
            if max_bytes is not None and nbytes > max_bytes:
                raise ValueError(f"{nbytes} bytes is more than the {max_bytes} allowed")
            data = f.read(nbytes)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, SyntaxError, TypeError) as err:
        raise error(str(err).splitlines()[0] if str(err) else type(err).__name__) from None
    if len(data) != nbytes:
        raise error("truncated")
    array = np.frombuffer(data, dtype=dtype).copy()
    return array.reshape(shape[::-1]).T if fortran else array.reshape(shape)
