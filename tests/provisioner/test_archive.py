"""Template archives: deterministic packing and safe unpacking."""

from __future__ import annotations

import io
import os
import re
import stat
import tarfile
from pathlib import Path

import pytest

from prebuildd.templates.archive import MAX_TEMPLATE_BYTES, pack_directory, read_member, unpack_archive


def make_template(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "prebuildd.toml").write_text('provisioner = "exec"\n')
    (root / "scripts").mkdir()
    (root / "scripts" / "create.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "scripts" / "create.sh").chmod(0o700)
    (root / "scripts" / "lib.sh").write_text("x=1\n")
    (root / "scripts" / "lib.sh").chmod(0o600)
    (root / "empty").mkdir()
    (root / "scripts" / "current").symlink_to("create.sh")
    for skipped in (".git", "__pycache__", "scripts/__pycache__", ".terraform"):
        (root / skipped).mkdir()
        (root / skipped / "junk").write_text("junk")
    return root


def tar_gz(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, content in members:
            if content is not None:
                info.size = len(content)
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return buffer.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def test_round_trip(tmp_path: Path) -> None:
    data = pack_directory(make_template(tmp_path / "src"))
    dest = tmp_path / "dest"
    unpack_archive(data, dest)

    found = sorted(str(p.relative_to(dest)) for p in dest.rglob("*"))
    assert found == [
        "empty",
        "prebuildd.toml",
        "scripts",
        "scripts/create.sh",
        "scripts/current",
        "scripts/lib.sh",
    ]
    assert (dest / "scripts" / "create.sh").read_text() == "#!/bin/sh\necho hi\n"
    assert os.access(dest / "scripts" / "create.sh", os.X_OK)
    assert not os.access(dest / "scripts" / "lib.sh", os.X_OK)
    assert os.readlink(dest / "scripts" / "current") == "create.sh"

    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        infos = tar.getmembers()
    assert [i.name for i in infos] == [
        "empty",
        "prebuildd.toml",
        "scripts",
        "scripts/create.sh",
        "scripts/current",
        "scripts/lib.sh",
    ]
    assert {(i.mtime, i.uid, i.gid, i.uname, i.gname) for i in infos} == {(0, 0, 0, "", "")}
    modes = {i.name: stat.S_IMODE(i.mode) for i in infos}
    assert modes["scripts/create.sh"] == 0o755
    assert modes["scripts/lib.sh"] == 0o644


def test_packing_is_deterministic(tmp_path: Path) -> None:
    a = make_template(tmp_path / "a")
    b = make_template(tmp_path / "b")
    os.utime(b / "prebuildd.toml", (1_000_000, 1_000_000))
    (b / "scripts" / "lib.sh").chmod(0o664)
    assert pack_directory(a) == pack_directory(b) == pack_directory(a)


def test_read_member(tmp_path: Path) -> None:
    data = pack_directory(make_template(tmp_path / "src"))
    assert read_member(data, "prebuildd.toml") == b'provisioner = "exec"\n'
    assert read_member(data, "./scripts/lib.sh") == b"x=1\n"
    assert read_member(data, "scripts") is None
    assert read_member(data, "nope") is None


def test_pack_refuses_a_directory_without_manifest(tmp_path: Path) -> None:
    (tmp_path / "main.tf").write_text("")
    with pytest.raises(ValueError, match=r"no prebuildd\.toml"):
        pack_directory(tmp_path)
    with pytest.raises(ValueError, match="not a directory"):
        pack_directory(tmp_path / "main.tf")


def test_pack_refuses_more_than_10_mib(tmp_path: Path) -> None:
    root = make_template(tmp_path / "src")
    with (root / "big.bin").open("wb") as f:
        f.truncate(MAX_TEMPLATE_BYTES)  # sparse: cheap to create
    with pytest.raises(ValueError, match=r"exceed 10 MiB \(largest: big\.bin, 10\.0 MiB\)"):
        pack_directory(root)


def test_pack_refuses_a_symlink_leaving_the_directory(tmp_path: Path) -> None:
    root = make_template(tmp_path / "src")
    (tmp_path / "secret").write_text("s")
    (root / "escape").symlink_to("../secret")
    with pytest.raises(ValueError, match=r"escape: symlink to '\.\./secret' points outside"):
        pack_directory(root)


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([(member("/etc/evil"), b"x")], "'/etc/evil': absolute paths"),
        ([(member("../evil"), b"x")], "'../evil': '..'"),
        ([(member("a/../../evil"), b"x")], "'a/../../evil': '..'"),
        ([(member("link", tarfile.SYMTYPE, "/etc/passwd"), None)], "'link': symlink to '/etc/passwd'"),
        ([(member("d/link", tarfile.SYMTYPE, "../../x"), None)], "'d/link': symlink to '../../x'"),
        ([(member("hard", tarfile.LNKTYPE, "../x"), None)], "'hard': hard link to '../x'"),
        ([(member("tty", tarfile.CHRTYPE), None)], "'tty': device files"),
        ([(member("disk", tarfile.BLKTYPE), None)], "'disk': device files"),
        ([(member("pipe", tarfile.FIFOTYPE), None)], "'pipe': FIFOs"),
        # Each link stays inside on paper; through the first one, the second leaves the directory.
        (
            [
                (member("s", tarfile.SYMTYPE, "."), None),
                (member("s/up", tarfile.SYMTYPE, ".."), None),
            ],
            "'s/up'",
        ),
    ],
)
def test_unpack_refuses(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], message: str
) -> None:
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match=re.escape(message)):
        unpack_archive(tar_gz(*members), dest)
    assert not (tmp_path / "evil").exists()
    assert not (tmp_path / "x").exists()


def test_unpack_refuses_more_than_10_mib(tmp_path: Path) -> None:
    data = tar_gz((member("big.bin"), b"\0" * (MAX_TEMPLATE_BYTES + 1)))
    with pytest.raises(ValueError, match=r"'big\.bin': archive files exceed 10 MiB"):
        unpack_archive(data, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_unpack_refuses_garbage(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a valid template archive"):
        unpack_archive(b"definitely not a tarball", tmp_path / "dest")
    with pytest.raises(ValueError, match="not a valid template archive"):
        read_member(b"\x1f\x8b garbage", "prebuildd.toml")
