"""End to end: a real mount, real tools, and plain boto3 to see what reached the emulator."""

from __future__ import annotations

import base64
import contextlib
import errno
import os
import random
import re
import stat
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from glacierfs.emulator import Emulator
from glacierfs.testing import GLACIERFS, Mount, daemon_pid, run, stop_daemon
from glacierfs.treehash import tree_hash

from .conftest import MiB, archives, boto_client

pytestmark = pytest.mark.mount

PART = MiB  # small parts, so a few MiB make several


@pytest.fixture
def mount(inprocess: Emulator, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Mount]:
    mounted = Mount(tmp_path, inprocess.url, "--part-size", str(PART), "--concurrency", "3")
    yield mounted
    mounted.unmount()
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        print(f"--- glacierfs log ---\n{mounted.log_text()}")


def make_vault(mount: Mount, name: str = "vault") -> Path:
    path = mount.path(name)
    path.mkdir()
    return path


def decode_description(description: str) -> str:
    """FastGlacier v4, read here without the project's own code."""
    match = re.fullmatch(r"<m><v>4</v><p>([A-Za-z0-9+/=]+)</p><lm>\d{8}T\d{6}Z</lm></m>", description)
    assert match, description
    return base64.b64decode(match[1]).decode()


def make_tree(root: Path, seed: int = 0) -> dict[str, bytes]:
    rng = random.Random(seed)
    files = {
        "one-byte": b"x",
        "under-a-part": rng.randbytes(PART - 1),
        "over-a-part": rng.randbytes(PART + 1),
        "three-parts": rng.randbytes(3 * PART + 17),
        "sub/small.txt": b"hello\n",
        "sub/deeper/data.bin": rng.randbytes(200_000),
        "sub/deeper/empty": b"",
        "with space/é unicode.txt": "ünïcödé".encode(),
    }
    for rel, data in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        os.utime(target, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000 + len(data)))
    (root / "empty-dir").mkdir()
    return files


def assert_stored(url: str, files: dict[str, bytes], prefix: str = "") -> None:
    """Each non-empty file is one archive: size, tree hash of the source, description that names it."""
    listed = archives(url, "vault")
    expected = sorted((prefix + rel, len(data), tree_hash(data)) for rel, data in files.items() if data)
    got = sorted((decode_description(a["ArchiveDescription"]), a["Size"], a["SHA256TreeHash"]) for a in listed)
    assert got == expected
    assert boto_client(url).list_multipart_uploads(vaultName="vault")["UploadsList"] == []


def test_cp_files_of_every_size(mount: Mount, inprocess: Emulator, tmp_path: Path) -> None:
    vault = make_vault(mount)
    files = {k: v for k, v in make_tree(tmp_path / "src").items() if "/" not in k}
    for rel in files:
        run("cp", tmp_path / "src" / rel, vault / rel)
    listing = run("ls", "-l", vault).stdout
    for rel, data in files.items():
        assert (vault / rel).stat().st_size == len(data)
        assert rel in listing
    assert_stored(inprocess.url, files)


def test_cp_r_and_rsync_of_a_tree(mount: Mount, inprocess: Emulator, tmp_path: Path) -> None:
    vault = make_vault(mount)
    files = make_tree(tmp_path / "src")
    run("cp", "-r", tmp_path / "src", vault / "copied")
    run("rsync", "-a", f"{tmp_path / 'src'}/", vault / "synced")
    for top in ("copied", "synced"):
        for rel, data in files.items():
            assert (vault / top / rel).stat().st_size == len(data), rel
        assert (vault / top / "empty-dir").is_dir()
    # rsync -a kept the source mtimes, so a second run transfers nothing.
    for rel in files:
        assert (vault / "synced" / rel).stat().st_mtime_ns == (tmp_path / "src" / rel).stat().st_mtime_ns
    again = run("rsync", "-a", "--stats", f"{tmp_path / 'src'}/", vault / "synced").stdout
    assert re.search(r"Number of regular files transferred: 0\b", again), again
    expected = {f"copied/{k}": v for k, v in files.items()} | {f"synced/{k}": v for k, v in files.items()}
    assert_stored(inprocess.url, expected)


def test_posix_tools(mount: Mount, inprocess: Emulator, tmp_path: Path) -> None:
    vault = make_vault(mount)
    run("mkdir", "-p", vault / "a/b/c")
    data = random.Random(3).randbytes(2 * PART + 5)
    (tmp_path / "f.bin").write_bytes(data)
    run("cp", tmp_path / "f.bin", vault / "a/b/c/f.bin")
    run("mv", vault / "a/b/c/f.bin", vault / "a/moved.bin")
    assert not (vault / "a/b/c/f.bin").exists() and (vault / "a/moved.bin").stat().st_size == len(data)
    stat_out = run("stat", "-c", "%s %F", vault / "a/moved.bin").stdout.split()
    assert stat_out[0] == str(len(data)) and "regular" in " ".join(stat_out[1:])
    found = run("find", vault, "-type", "f").stdout.split()
    assert found == [str(vault / "a/moved.bin")]
    du_kib = int(run("du", "-sk", vault).stdout.split()[0])
    assert du_kib >= len(data) // 1024
    xattrs = run("getfattr", "-d", vault / "a/moved.bin").stdout
    assert 'user.glacier.state="stored"' in xattrs
    assert f'user.glacier.tree-hash="{tree_hash(data)}"' in xattrs
    archive_id = re.search(r'user.glacier.archive-id="([^"]+)"', xattrs)[1]
    assert [a["ArchiveId"] for a in archives(inprocess.url, "vault")] == [archive_id]
    run("cp", tmp_path / "f.bin", vault / "a/b/other.bin")
    run("rm", vault / "a/moved.bin")
    run("rm", "-r", vault / "a")
    assert list(vault.iterdir()) == []
    assert archives(inprocess.url, "vault") == []
    run("rmdir", vault)
    assert not vault.exists()
    assert boto_client(inprocess.url).list_vaults()["VaultList"] == []


def test_tar_extracts_into_the_mount(mount: Mount, inprocess: Emulator, tmp_path: Path) -> None:
    vault = make_vault(mount)
    files = make_tree(tmp_path / "src")
    archive = tmp_path / "tree.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "src", arcname="tree")
    run("tar", "-xf", archive, "-C", vault)
    for rel, data in files.items():
        extracted = vault / "tree" / rel
        assert extracted.stat().st_size == len(data)
        assert extracted.stat().st_mtime_ns // 10**9 == (tmp_path / "src" / rel).stat().st_mtime_ns // 10**9
    assert_stored(inprocess.url, {f"tree/{k}": v for k, v in files.items()})


def test_refused_uploads_fail_cp_and_leave_nothing(inprocess: Emulator, tmp_path: Path) -> None:
    mount = Mount(tmp_path, inprocess.url, "--part-size", str(PART), "--max-attempts", "2", "--cleanup-interval", "0.5")
    try:
        refused_uploads_fail_cp(mount, inprocess, tmp_path)
    finally:
        mount.unmount()


def refused_uploads_fail_cp(mount: Mount, inprocess: Emulator, tmp_path: Path) -> None:
    vault = make_vault(mount)
    source = tmp_path / "big"
    source.write_bytes(random.Random(5).randbytes(3 * PART + 1))
    (tmp_path / "small").write_bytes(b"small")
    inprocess.settings.fault_rate = 1.0
    for name in ("big", "small"):
        result = run("cp", tmp_path / name, vault / name, check=False)
        assert result.returncode != 0 and "Input/output error" in result.stderr
    inprocess.settings.fault_rate = 0.0
    # Refused half-way: the multipart upload exists when the faults begin.
    with open(vault / "half", "wb") as half:
        half.write(bytes(2 * PART + 1))
        half.flush()
        inprocess.settings.fault_rate = 1.0
        with pytest.raises(OSError) as excinfo:
            half.write(bytes(PART))
            half.close()
        assert excinfo.value.errno == errno.EIO
    inprocess.settings.fault_rate = 0.0
    assert list(vault.iterdir()) == []
    assert archives(inprocess.url, "vault") == []
    # The abort was refused too; the janitor retries it once Glacier answers again.
    deadline = time.monotonic() + 20
    while boto_client(inprocess.url).list_multipart_uploads(vaultName="vault")["UploadsList"]:
        assert time.monotonic() < deadline, mount.log_text()
        time.sleep(0.2)
    assert "nothing was stored" in mount.log_text()


def rewrite_behind(path: Path) -> None:
    """Write two parts and a bit, then go back to the start: the first part is sent."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, bytes(2 * PART + 1))
        os.pwrite(fd, b"back", 0)
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


def test_rewriting_a_header_still_buffered_keeps_the_rest(mount: Mount, inprocess: Emulator) -> None:
    """Tools that patch a header after the body (zip, some encoders) rewrite bytes
    not yet sent: they are overwritten in place, nothing after them is lost."""
    vault = make_vault(mount)
    body = random.Random(7).randbytes(PART + PART // 2)
    fd = os.open(vault / "patched", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, body)
        os.pwrite(fd, b"HEADER", PART + 10)  # inside the part still being filled
    finally:
        os.close(fd)
    expected = body[: PART + 10] + b"HEADER" + body[PART + 16 :]
    assert [(a["Size"], a["SHA256TreeHash"]) for a in archives(inprocess.url, "vault")] == [
        (len(expected), tree_hash(expected))
    ]


def test_bad_input_gets_clear_errnos(mount: Mount, tmp_path: Path) -> None:
    vault = make_vault(mount)
    make_vault(mount, "other")
    (vault / "f").write_bytes(b"content")
    cases = [
        (lambda: mount.path("bad name!").mkdir(), errno.EINVAL),
        (lambda: mount.path("loose-file").write_bytes(b"x"), errno.EPERM),
        (lambda: os.symlink("f", vault / "link"), errno.EPERM),
        (lambda: os.link(vault / "f", vault / "hard"), errno.EPERM),
        (lambda: os.rename(vault / "f", mount.path("other", "f")), errno.EXDEV),
        (lambda: open(vault / "f", "ab").write(b"more"), errno.EPERM),  # noqa: SIM115 - the open is refused
        (lambda: vault.rmdir(), errno.ENOTEMPTY),
        (lambda: (vault / ("n" * 256)).write_bytes(b"x"), errno.ENAMETOOLONG),
        (lambda: os.mknod(vault / "device", 0o600 | stat.S_IFCHR, os.makedev(1, 3)), errno.EPERM),
        (lambda: os.mkfifo(vault / "fifo"), errno.EPERM),
        (lambda: rewrite_behind(vault / "seq"), errno.EPERM),
    ]
    for action, expected in cases:
        with pytest.raises(OSError) as excinfo:
            action()
        assert excinfo.value.errno == expected, (action, excinfo.value)
    log = mount.log_text()
    assert "vault name holds only" in log and "already sent" in log and "keeps only regular files" in log
    assert (vault / "f").stat().st_size == 7
    assert mount.process.poll() is None  # and the mount is still serving


def test_catalog_survives_remount(inprocess: Emulator, tmp_path: Path) -> None:
    first = Mount(tmp_path, inprocess.url, "--part-size", str(PART))
    try:
        (first.path("vault")).mkdir()
        (first.path("vault", "kept.txt")).write_bytes(b"kept")
        os.utime(first.path("vault", "kept.txt"), ns=(0, 1_234_567_890_000_000_000))
        (first.path("vault", "emptydir")).mkdir()
    finally:
        first.unmount()
    second = Mount(tmp_path, inprocess.url, "--part-size", str(PART))
    try:
        assert sorted(p.name for p in second.path("vault").iterdir()) == ["emptydir", "kept.txt"]
        assert second.path("vault", "kept.txt").stat().st_mtime_ns == 1_234_567_890_000_000_000
    finally:
        second.unmount()


def test_daemon_reports_unreachable_endpoint(tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    result = subprocess.run(
        [
            *GLACIERFS,
            "mount",
            str(tmp_path / "mnt"),
            "--endpoint-url",
            "http://127.0.0.1:9",
            "--state-dir",
            str(tmp_path / "state"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "cannot reach Glacier" in result.stderr
    assert not os.path.ismount(tmp_path / "mnt")


def test_daemon_mounts_and_umount_unmounts(inprocess: Emulator, tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    result = subprocess.run(
        [
            *GLACIERFS,
            "mount",
            str(tmp_path / "mnt"),
            "--endpoint-url",
            inprocess.url,
            "--state-dir",
            str(tmp_path / "state"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    try:
        assert result.returncode == 0, result.stderr
        assert os.path.ismount(tmp_path / "mnt")
        busy = subprocess.run(
            [*GLACIERFS, "mount", str(tmp_path / "mnt"), "--endpoint-url", inprocess.url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert busy.returncode != 0 and "busy" in busy.stderr
    finally:
        subprocess.run([*GLACIERFS, "umount", str(tmp_path / "mnt")], check=False, timeout=60)
        exited = stop_daemon(daemon_pid(result.stdout))
    assert not os.path.ismount(tmp_path / "mnt")
    assert exited, "the daemon outlived its mount"


def test_sparse_copy_fills_the_hole_with_zeros(mount: Mount, inprocess: Emulator, tmp_path: Path) -> None:
    vault = make_vault(mount)
    sparse = tmp_path / "sparse"
    with open(sparse, "wb") as handle:
        handle.write(b"head")
        handle.seek(3 * PART)
        handle.write(b"tail")
    run("cp", "--sparse=always", sparse, vault / "sparse")
    expected = b"head" + bytes(3 * PART - 4) + b"tail"
    assert (vault / "sparse").stat().st_size == len(expected)
    assert [a["SHA256TreeHash"] for a in archives(inprocess.url, "vault")] == [tree_hash(expected)]


def test_rsync_of_a_changed_file_replaces_its_archive(mount: Mount, inprocess: Emulator, tmp_path: Path) -> None:
    vault = make_vault(mount)
    source = tmp_path / "src"
    source.mkdir()
    (source / "doc.txt").write_bytes(b"first version")
    run("rsync", "-a", f"{source}/", vault)
    (source / "doc.txt").write_bytes(b"second, longer version")
    run("rsync", "-a", f"{source}/", vault)
    listed = archives(inprocess.url, "vault")
    assert [(decode_description(a["ArchiveDescription"]), a["SHA256TreeHash"]) for a in listed] == [
        ("doc.txt", tree_hash(b"second, longer version"))
    ]
    assert (vault / "doc.txt").stat().st_size == len(b"second, longer version")


def test_keep_replaced_keeps_the_old_archive(inprocess: Emulator, tmp_path: Path) -> None:
    mount = Mount(tmp_path, inprocess.url, "--keep-replaced")
    try:
        vault = make_vault(mount)
        (vault / "f").write_bytes(b"one")
        (vault / "f").write_bytes(b"two!")
        assert sorted(a["Size"] for a in archives(inprocess.url, "vault")) == [3, 4]
        assert (vault / "f").stat().st_size == 4
    finally:
        mount.unmount()


def test_daemon_reports_missing_credentials(tmp_path: Path) -> None:
    (tmp_path / "mnt").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_EC2_METADATA_DISABLED="true")
    result = subprocess.run(
        [*GLACIERFS, "mount", str(tmp_path / "mnt"), "--region", "us-east-1", "--state-dir", str(tmp_path / "state")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode != 0 and "credentials" in result.stderr
    assert not os.path.ismount(tmp_path / "mnt")


def test_embedded_emulator_keeps_data_across_remounts(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    command = [*GLACIERFS, "mount", "--emulator", "--emulator-dir", str(tmp_path / "emu"), str(mnt)]
    for round_ in range(2):
        started = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert started.returncode == 0, started.stderr
        try:
            if round_ == 0:
                (mnt / "vault").mkdir()
                (mnt / "vault" / "kept.bin").write_bytes(b"k" * 1000)
            else:
                assert (mnt / "vault" / "kept.bin").stat().st_size == 1000
                xattrs = run("getfattr", "-d", mnt / "vault" / "kept.bin").stdout
                assert 'user.glacier.state="stored"' in xattrs
        finally:
            subprocess.run([*GLACIERFS, "umount", str(mnt)], check=False, timeout=60)
            assert stop_daemon(daemon_pid(started.stdout))
    assert (tmp_path / "emu" / "glacier" / "emulator.sqlite").exists()


@pytest.mark.parametrize("mode", [(), ("--write-back", "--settle", "0")], ids=["direct", "write-back"])
def test_mtime_is_the_last_write_or_what_utimens_set(
    inprocess: Emulator, tmp_path: Path, mode: tuple[str, ...]
) -> None:
    """make, rsync's quick check and backups compare mtimes: overwriting a file
    moves its mtime, and cp -p (data, then utimens, then close) keeps the one it set."""
    mounted = Mount(tmp_path, inprocess.url, "--part-size", str(PART), *mode)
    try:
        target = make_vault(mounted, "v") / "notes.txt"
        target.write_bytes(b"first")
        first = target.stat().st_mtime_ns
        time.sleep(0.05)
        with open(target, "wb") as handle:
            handle.write(b"second")
            handle.flush()
            assert target.stat().st_mtime_ns > first  # while it is written, too
        overwritten = target.stat().st_mtime_ns
        assert overwritten > first
        source = tmp_path / "old.txt"
        source.write_bytes(b"from 2001")
        os.utime(source, ns=(1_000_000_000 * 10**9, 1_000_000_000 * 10**9))
        run("cp", "-p", source, target)
        assert target.stat().st_mtime_ns == 1_000_000_000 * 10**9
        with open(target, "wb") as handle:  # a utimens, then a write: the write's time wins
            handle.write(b"a")
            os.utime(handle.fileno(), ns=(5 * 10**9, 5 * 10**9))
            handle.write(b"b")
        assert target.stat().st_mtime_ns > overwritten
        run(*GLACIERFS, "umount", mounted.mountpoint)
        mounted.process.wait(timeout=30)
    finally:
        mounted.unmount()
