"""Template archives: a deterministic tar.gz of a template directory, and its safe extraction.

The same directory always packs to the same bytes (sorted entries, mtime 0, owner 0:0, normalised modes that keep
only the executable bit), so a version's hash says whether its files changed.
"""

from __future__ import annotations

import gzip
import io
import os
import posixpath
import stat
import tarfile
from pathlib import Path

from prebuildd.domain.manifest import MANIFEST_FILE

MAX_TEMPLATE_BYTES = 10 * 1024 * 1024
"""Upper bound on the total size of the files of one template version (uncompressed)."""

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


def _open(data: bytes) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ValueError(f"not a valid template archive: {exc}") from exc


def _members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    try:
        return tar.getmembers()
    except (tarfile.TarError, OSError, EOFError) as exc:
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
    outside ``dest``, device files, FIFOs, and archives whose files exceed 10 MiB in total. Every member is
    checked before anything is written.
    """
    with _open(data) as tar:
        members = _members(tar)
        total = 0
        for member in members:
            _check_member(member)
            if member.isreg():
                total += member.size
                if total > MAX_TEMPLATE_BYTES:
                    raise ValueError(
                        f"archive member {member.name!r}: archive files exceed {_limit_text()} in total"
                    )
        dest.mkdir(parents=True, exist_ok=True)
        try:
            tar.extractall(dest, members=members, filter=_extraction_filter)
        except tarfile.TarError as exc:
            raise ValueError(f"cannot extract template archive: {exc}") from exc


def read_member(data: bytes, name: str) -> bytes | None:
    """The content of the regular file ``name`` in the archive, or None when there is no such file."""
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
