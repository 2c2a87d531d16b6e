"""Template archives: a deterministic tar.gz of a template directory, and its safe extraction.

The same directory always packs to the same bytes (sorted entries, mtime 0, owner 0:0, normalised modes that keep
only the executable bit), so a version's hash says whether its files changed.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import posixpath
import stat
import tarfile
from pathlib import Path

from prebuildd.domain.manifest import MANIFEST_FILE

MAX_TEMPLATE_BYTES = 10 * 1024 * 1024
"""Upper bound on the total size of the files of one template version (uncompressed), and on the archive as
uploaded (compressed)."""

MAX_ARCHIVE_ENTRIES = 10_000
"""Upper bound on the members of one archive: files, directories and links. A template has tens; 50,000 empty
entries once held the event loop for 7 s."""

MAX_PATH_DEPTH = 32
"""Upper bound on the directories in one member's path."""

MAX_INFLATED_BYTES = 32 * 1024 * 1024
"""Upper bound on the archive once decompressed, headers and padding included: the files' 10 MiB plus the headers
of the most entries allowed. Reading stops there, so a small archive that inflates to a gigabyte costs 32 MiB of
decompression, not a gigabyte."""

SKIPPED_NAMES = frozenset({".git", "__pycache__", ".terraform"})
"""Directory (or file) names never packed, at any depth."""

_FILE_MODE = 0o644
_EXECUTABLE_MODE = 0o755
_DIR_MODE = 0o755
_SYMLINK_MODE = 0o777


def _limit_text() -> str:
    return f"{MAX_TEMPLATE_BYTES // (1024 * 1024)} MiB"


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


def _tarinfo(name: str, kind: bytes, mode: int, size: int = 0, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.linkname = linkname
    info.mtime = 0
    info.uid = 0
    info.gid = 0
    info.uname = ""
    info.gname = ""
    return info


def pack_directory(path: Path) -> bytes:
    """A deterministic tar.gz of the template directory ``path``.

    Entries are sorted, carry mtime 0 and owner 0:0, and keep only the executable bit of their mode;
    ``.git``, ``__pycache__`` and ``.terraform`` are skipped at any depth. Symlinks are stored as links and
    must stay inside the directory. Raises ValueError when ``path`` is not a directory, has no
    ``prebuildd.toml`` at its root, holds more than 10 MiB of files, or holds a special file (FIFO, socket,
    device) or a symlink leaving the directory.
    """
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory")
    if not (root / MANIFEST_FILE).is_file():
        raise ValueError(f"{root}: no {MANIFEST_FILE} at the root of the template directory")
    real_root = os.path.realpath(root)

    buffer = io.BytesIO()
    total = 0
    largest = ("", 0)
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):

        def add(directory: Path, prefix: str) -> None:
            nonlocal total, largest
            for entry in sorted(os.scandir(directory), key=lambda e: e.name):
                if entry.name in SKIPPED_NAMES:
                    continue
                name = f"{prefix}{entry.name}"
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    target = os.readlink(entry.path)
                    resolved = os.path.realpath(entry.path)
                    if os.path.isabs(target) or os.path.commonpath([resolved, real_root]) != real_root:
                        raise ValueError(
                            f"{name}: symlink to {target!r} points outside the template directory"
                        )
                    tar.addfile(_tarinfo(name, tarfile.SYMTYPE, _SYMLINK_MODE, linkname=target))
                elif stat.S_ISDIR(st.st_mode):
                    tar.addfile(_tarinfo(name, tarfile.DIRTYPE, _DIR_MODE))
                    add(Path(entry.path), f"{name}/")
                elif stat.S_ISREG(st.st_mode):
                    if st.st_size > largest[1]:
                        largest = (name, st.st_size)
                    if total + st.st_size > MAX_TEMPLATE_BYTES:
                        raise ValueError(
                            f"{root}: template files exceed {_limit_text()} (largest: {largest[0]}, "
                            f"{_mib(largest[1])}); remove large files or build artefacts from the template "
                            "directory"
                        )
                    content = Path(entry.path).read_bytes()
                    total += len(content)
                    mode = _EXECUTABLE_MODE if st.st_mode & 0o111 else _FILE_MODE
                    info = _tarinfo(name, tarfile.REGTYPE, mode, size=len(content))
                    tar.addfile(info, io.BytesIO(content))
                else:
                    raise ValueError(f"{name}: not a regular file, directory or symlink; cannot pack it")

        add(root, "")
    return buffer.getvalue()


class ArchiveLimitError(ValueError):
    """The archive passes one of the limits above; ``limit`` names it (``entries``, ``size``, ``inflated``,
    ``depth``)."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit


class _InflateLimit(io.RawIOBase):
    """The decompressed stream, refusing any read or seek past :data:`MAX_INFLATED_BYTES` *before* doing it
    (tarfile reads a pax header of any declared size into memory at once)."""

    def __init__(self, stream: io.BufferedIOBase | io.BytesIO) -> None:
        self._stream = stream

    def _refuse_past(self, end: int) -> None:
        if end > MAX_INFLATED_BYTES:
            raise ArchiveLimitError(
                "inflated",
                f"template archive inflates to more than {MAX_INFLATED_BYTES // (1024 * 1024)} MiB "
                f"(files may hold at most {_limit_text()} in total)",
            )

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        position = self._stream.tell()
        if size is None or size < 0:
            size = MAX_INFLATED_BYTES + 1 - position
        self._refuse_past(position + size if size else position)
        return self._stream.read(size)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self._refuse_past(offset)
        elif whence == io.SEEK_CUR:
            self._refuse_past(self._stream.tell() + offset)
        return self._stream.seek(offset, whence)

    def tell(self) -> int:
        return self._stream.tell()


def _decompressed(data: bytes) -> io.BufferedIOBase | io.BytesIO:
    raw = io.BytesIO(data)
    if data[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if data[:3] == b"BZh":
        return bz2.BZ2File(raw)
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(raw)
    return raw


def _open(data: bytes) -> tarfile.TarFile:
    """The archive (gzip, bzip2, xz or plain tar), decompressed at most up to :data:`MAX_INFLATED_BYTES`."""
    try:
        return tarfile.open(fileobj=_InflateLimit(_decompressed(data)), mode="r:")
    except ArchiveLimitError:
        raise
    except (tarfile.TarError, OSError, EOFError, lzma.LZMAError) as exc:
        raise ValueError(f"not a valid template archive: {exc}") from exc


def _depth(name: str) -> int:
    return len([part for part in _normalise(name).split("/") if part not in ("", ".")])


def check_archive(data: bytes) -> None:
    """Refuse an archive, before anything is extracted, that passes a limit (:class:`ArchiveLimitError` naming
    it: more than :data:`MAX_ARCHIVE_ENTRIES` entries, files over 10 MiB in total, a path deeper than
    :data:`MAX_PATH_DEPTH`, or over :data:`MAX_INFLATED_BYTES` once decompressed) or holds an unsafe member
    (ValueError naming it). Headers are read one at a time, so it stops at the first entry past a limit.

    CPU-bound (decompression): callers on the event loop run it in a worker thread.
    """
    with _open(data) as tar:
        count = 0
        total = 0
        while True:
            try:
                member = tar.next()
            except ArchiveLimitError:
                raise
            except (tarfile.TarError, OSError, EOFError, lzma.LZMAError) as exc:
                raise ValueError(f"not a valid template archive: {exc}") from exc
            if member is None:
                return
            count += 1
            if count > MAX_ARCHIVE_ENTRIES:
                raise ArchiveLimitError(
                    "entries", f"template archive has more than {MAX_ARCHIVE_ENTRIES} entries"
                )
            if _depth(member.name) > MAX_PATH_DEPTH:
                raise ArchiveLimitError(
                    "depth",
                    f"archive member {member.name[:200]!r}: paths may be at most {MAX_PATH_DEPTH} "
                    "directories deep",
                )
            _check_member(member)
            if member.isreg():
                total += member.size
                if total > MAX_TEMPLATE_BYTES:
                    raise ArchiveLimitError(
                        "size",
                        f"archive member {member.name[:200]!r}: archive files exceed {_limit_text()} in total",
                    )


def _members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    try:
        return tar.getmembers()
    except ArchiveLimitError:
        raise
    except (tarfile.TarError, OSError, EOFError, lzma.LZMAError) as exc:
        raise ValueError(f"not a valid template archive: {exc}") from exc


def _normalise(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


def _check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    where = f"archive member {name!r}"
    if not name or name.startswith("/") or posixpath.isabs(name):
        raise ValueError(f"{where}: absolute paths are not allowed")
    if ".." in name.split("/"):
        raise ValueError(f"{where}: '..' in paths is not allowed")
    if member.ischr() or member.isblk():
        raise ValueError(f"{where}: device files are not allowed")
    if member.isfifo():
        raise ValueError(f"{where}: FIFOs are not allowed")
    if member.issym():
        link = member.linkname
        target = posixpath.normpath(posixpath.join(posixpath.dirname(_normalise(name)), link))
        if posixpath.isabs(link) or target == ".." or target.startswith("../"):
            raise ValueError(f"{where}: symlink to {link!r} points outside the archive")
    elif member.islnk():
        link = member.linkname
        if posixpath.isabs(link) or ".." in link.split("/"):
            raise ValueError(f"{where}: hard link to {link!r} points outside the archive")
    elif not (member.isreg() or member.isdir()):
        raise ValueError(f"{where}: unsupported member type {member.type!r}")


def _extraction_filter(member: tarfile.TarInfo, dest_path: str) -> tarfile.TarInfo:
    """The standard ``data`` filter (it resolves links already extracted), with errors naming the member."""
    try:
        return tarfile.data_filter(member, dest_path)
    except tarfile.FilterError as exc:
        raise ValueError(f"archive member {member.name!r}: {exc}") from exc


def unpack_archive(data: bytes, dest: Path) -> None:
    """Extract a template archive into ``dest`` (created if missing).

    Refuses, with a ValueError naming the member, absolute paths, ``..``, symlinks or hard links pointing
    outside ``dest``, device files, FIFOs, and archives past the limits of :func:`check_archive`. Every member
    is checked before anything is written.
    """
    check_archive(data)
    with _open(data) as tar:
        members = _members(tar)
        dest.mkdir(parents=True, exist_ok=True)
        try:
            tar.extractall(dest, members=members, filter=_extraction_filter)
        except tarfile.TarError as exc:
            raise ValueError(f"cannot extract template archive: {exc}") from exc


def read_member(data: bytes, name: str) -> bytes | None:
    """The content of the regular file ``name`` in the archive, or None when there is no such file.

    Reads every header: call it on an archive :func:`check_archive` accepted."""
    wanted = _normalise(name)
    with _open(data) as tar:
        found: tarfile.TarInfo | None = None
        for member in _members(tar):
            if _normalise(member.name) == wanted:
                found = member
        if found is None or not found.isreg():
            return None
        extracted = tar.extractfile(found)
        if extracted is None:
            return None
        with extracted:
            return extracted.read()
