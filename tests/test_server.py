"""Running glacierfs as a system filesystem: mount(8) and fstab's form, systemd's
readiness protocol, monitoring (`status --json`, exit codes), a lost endpoint,
and an install outside a checkout."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from glacierfs import errors
from glacierfs.glacier import GlacierClient
from glacierfs.testing import GLACIERFS, Mount, ServedEmulator, fusermount, is_mounted, wait_for

from .conftest import archives

REPO = Path(__file__).resolve().parent.parent
SYSTEM_LINK = Path("/usr/local/bin/glacierfs")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GLACIERFS, *args], capture_output=True, text=True, timeout=60)


# mount(8) and fstab ------------------------------------------------------------


def test_mount_helper_form_names_its_errors() -> None:
    refused = run_cli("glacier", "/nonexistent", "-o", "rw,dev,suid,_netdev,x-systemd.automount,no_such_option=1")
    assert refused.returncode == 2 and "unknown mount option 'no_such_option'" in refused.stderr
    assert "SOURCE is glacier or glacier:REGION" in run_cli("s3", "/nonexistent").stderr
    assert "cache_size needs a value" in run_cli("glacier", "/nonexistent", "-o", "cache_size").stderr
    assert "takes no value" in run_cli("glacier", "/nonexistent", "-o", "debug=1").stderr


@contextmanager
def on_system_path() -> Iterator[Path]:
    """glacierfs linked into /usr/local/bin as the README installs it (scripts/setup
    --system), and whatever link was there before put back afterwards."""
    before = os.readlink(SYSTEM_LINK) if SYSTEM_LINK.is_symlink() else None
    if SYSTEM_LINK.exists() and before is None:
        pytest.skip(f"{SYSTEM_LINK} is a file of someone else's; not replacing it")
    subprocess.run([str(REPO / "scripts" / "setup"), "--system"], check=True, capture_output=True, timeout=600)
    try:
        yield SYSTEM_LINK
    finally:
        SYSTEM_LINK.unlink(missing_ok=True)
        if before is not None:
            SYSTEM_LINK.symlink_to(before)


@pytest.mark.mount
def test_mount_8_with_fstab_options_then_plain_umount(served: ServedEmulator, tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("mount.fuse3", path="/usr/sbin:/sbin") is None:
        pytest.skip("needs root and the system's mount.fuse3")
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    options = ",".join(
        [
            "rw",
            "_netdev",
            "nofail",
            "noauto",
            "x-systemd.automount",
            f"endpoint_url={served.url}",
            f"state_dir={tmp_path / 'state'}",
            f"cache_dir={tmp_path / 'cache'}",
            "max_attempts=2",
        ]
    )
    with on_system_path():
        mounted = subprocess.run(
            ["mount", "-t", "fuse.glacierfs", "glacier:us-east-1", str(mountpoint), "-o", options],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},  # not the tests' virtualenv
        )
    assert mounted.returncode == 0, mounted.stderr
    daemon = int(mounted.stdout.rsplit("pid ", 1)[1].rstrip(")\n"))
    try:
        assert Path(f"/proc/{daemon}/exe").resolve().name.startswith("python")
        (mountpoint / "fstab").mkdir()
        shutil.copyfile(__file__, mountpoint / "fstab" / "copied.py")
        stored = archives(served.url, "fstab")
        assert [a["Size"] for a in stored] == [Path(__file__).stat().st_size]
        assert "fuse.glacierfs" in Path("/proc/self/mountinfo").read_text()
    finally:
        unmounted = subprocess.run(["umount", str(mountpoint)], capture_output=True, text=True)
        if unmounted.returncode:
            subprocess.run([fusermount(), "-uz", str(mountpoint)], check=False)
    assert unmounted.returncode == 0, unmounted.stderr
    wait_for(lambda: not Path(f"/proc/{daemon}").exists(), what="the daemon to exit after umount")


# systemd ------------------------------------------------------------------------


@pytest.mark.mount
def test_systemd_hears_ready_then_stopping_and_the_journal_gets_unstamped_lines(
    served: ServedEmulator, tmp_path: Path
) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = tmp_path / "notify.sock"
    listener.bind(str(address))
    listener.settimeout(30)
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    command = [
        *GLACIERFS,
        "mount",
        str(mountpoint),
        "--foreground",
        "--endpoint-url",
        served.url,
        "--state-dir",
        str(tmp_path / "state"),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    environment_of_unit = {**os.environ, "NOTIFY_SOCKET": str(address), "JOURNAL_STREAM": "8:12345"}
    daemon = subprocess.Popen(command, env=environment_of_unit, stderr=subprocess.PIPE, text=True)
    try:
        ready = listener.recv(4096).decode().split("\n")
        assert "READY=1" in ready and f"MAINPID={daemon.pid}" in ready
        assert is_mounted(mountpoint)
        (mountpoint / "unit").mkdir()
        (mountpoint / "unit" / "f").write_bytes(b"written under systemd")
        assert [a["Size"] for a in archives(served.url, "unit")] == [len(b"written under systemd")]
        subprocess.run([fusermount(), "-u", str(mountpoint)], check=True)
        assert "STOPPING=1" in listener.recv(4096).decode().split("\n")
        assert daemon.wait(timeout=30) == 0
    finally:
        if daemon.poll() is None:
            subprocess.run([fusermount(), "-uz", str(mountpoint)], check=False)
            daemon.terminate()
            daemon.wait(timeout=10)
        listener.close()
    assert daemon.stderr is not None
    lines = [line for line in daemon.stderr.read().splitlines() if " glacierfs." in f" {line}"]
    assert lines and all(line.split(" ", 1)[0] in ("INFO", "WARNING", "ERROR") for line in lines), lines


def test_the_example_unit_is_valid(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = (REPO / "contrib" / "glacierfs.service").read_text()
    assert "Type=notify" in unit and "--foreground" in unit
    # Checked with this checkout's glacierfs in place of /usr/local/bin's, which may not exist.
    copy = tmp_path / "glacierfs.service"
    copy.write_text(unit.replace("/usr/local/bin/glacierfs", str(Path(sys.prefix) / "bin" / "glacierfs")))
    checked = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


# Monitoring -----------------------------------------------------------------------


@pytest.mark.mount
def test_a_lost_endpoint_is_logged_once_shown_by_status_and_its_exit_code(tmp_path: Path) -> None:
    emulator = ServedEmulator()
    mount = Mount(tmp_path, emulator.url, "--max-attempts", "1", "--vault-list-ttl", "0")
    try:
        healthy = run_cli("status", "--json", str(mount.mountpoint))
        assert healthy.returncode == 0, healthy.stderr
        assert json.loads(healthy.stdout)["mounts"][str(mount.mountpoint)]["glacier"]["reachable"] is True
        emulator.stop()
        for attempt in range(5):
            with pytest.raises(OSError) as failed:
                mount.path(f"vault-{attempt}").mkdir()
            assert failed.value.errno == errno.EIO
        lost = run_cli("status", "--json", str(mount.mountpoint))
        assert lost.returncode == 3
        glacier = json.loads(lost.stdout)["mounts"][str(mount.mountpoint)]["glacier"]
        assert glacier["reachable"] is False and "unreachable" in glacier["error"]
        assert "NOT ANSWERING" in run_cli("status", str(mount.mountpoint)).stdout
    finally:
        mount.unmount()
        emulator.stop()
    log = mount.log_text()
    assert log.count("lost Glacier at") == 1, log
    assert "mkdir" not in log  # no line per failed call


def test_status_of_a_path_that_is_no_mount_exits_1(tmp_path: Path) -> None:
    result = run_cli("status", "--json", str(tmp_path))
    assert result.returncode == 1 and "not a running glacierfs mount" in result.stderr


def test_reachability_follows_what_calls_find(inprocess, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    lost = GlacierClient(endpoint_url=f"http://127.0.0.1:{port}", max_attempts=1)
    with pytest.raises(errors.Unreachable):
        list(lost.list_vaults())
    assert lost.reachability.status()["reachable"] is False
    answered = GlacierClient(endpoint_url=inprocess.url, max_attempts=1)
    with pytest.raises(errors.NotFound):
        answered.describe_vault("none-such")  # an error, but an answer
    assert answered.reachability.status() == {
        "endpoint": inprocess.url,
        "reachable": True,
        "lost_since": None,
        "error": "",
    }


# Installs outside a checkout ---------------------------------------------------------


@pytest.mark.mount
@pytest.mark.slow
def test_pip_install_outside_a_checkout_mounts_with_the_system_libfuse(served: ServedEmulator, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(REPO)], capture_output=True, text=True, timeout=900
    )
    if installed.returncode and "Could not find a version" in installed.stderr + installed.stdout:
        pytest.skip(f"PyPI cannot be reached: {installed.stderr[-300:]}")
    assert installed.returncode == 0, installed.stderr[-2000:]
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    log = tmp_path / "mount.log"
    environ = {name: value for name, value in os.environ.items() if name != "FUSE_LIBRARY_PATH"}
    mounted = subprocess.run(
        [
            str(venv / "bin" / "glacierfs"),
            "mount",
            str(mountpoint),
            "--endpoint-url",
            served.url,
            "--state-dir",
            str(tmp_path / "state"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--log-file",
            str(log),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
    )
    assert mounted.returncode == 0, mounted.stderr
    daemon = int(mounted.stdout.rsplit("pid ", 1)[1].rstrip(")\n"))
    try:
        (mountpoint / "pip").mkdir()
        (mountpoint / "pip" / "f").write_bytes(b"from a pip install")
        assert [a["Size"] for a in archives(served.url, "pip")] == [len(b"from a pip install")]
        maps = Path(f"/proc/{daemon}/maps").read_text()
        assert "libfuse3.so" in maps and str(REPO) not in maps  # the system's libfuse, not the checkout's
        version = tuple(int(n) for n in re.search(r"libfuse3\.so\.3\.(\d+)", maps).groups())  # type: ignore[union-attr]
    finally:
        subprocess.run([fusermount(), "-u", str(mountpoint)], check=False)
    wait_for(lambda: not Path(f"/proc/{daemon}").exists(), what="the daemon to exit")
    said = log.read_text().count("FUSE passthrough needs libfuse 3.17")
    assert said == (1 if version < (17,) else 0)
