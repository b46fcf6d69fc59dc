"""The emulator and a real glacierfs mount in subprocesses, stopped by their own
PIDs: what the end-to-end tests and the benchmarks in scripts/ share, so that
neither depends on the other. Nothing in the mount itself imports this."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

# The CLI of the glacierfs under test, whatever is on PATH.
GLACIERFS = [sys.executable, "-m", "glacierfs"]


def is_mounted(mountpoint: Path) -> bool:
    target = str(mountpoint)
    with open("/proc/self/mountinfo", encoding="utf-8") as table:
        return any(line.split()[4] == target for line in table)


class ServedEmulator:
    """``glacierfs emulator`` in a subprocess, stopped by its own PID."""

    def __init__(self, *extra: str, data_dir: Path | None = None) -> None:
        command = [*GLACIERFS, "emulator", "--port", "0", *extra]
        if data_dir is not None:
            command += ["--data-dir", str(data_dir)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if "listening on" not in line:
            problem = self.process.stderr.read() if self.process.stderr else ""
            self.stop()
            raise RuntimeError(f"emulator did not start: {line!r} {problem}")
        self.url = line.rsplit(" ", 1)[-1].strip()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream:
                stream.close()


def fusermount() -> str:
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    assert tool, "fusermount3 is missing: run scripts/setup"
    return tool


class Mount:
    """``glacierfs mount --foreground`` against ``endpoint``; unmounted and stopped by its own PID."""

    def __init__(self, workdir: Path, endpoint: str, *extra: str, timeout: float = 30) -> None:
        self.mountpoint = workdir / "mnt"
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self.state = workdir / "state"
        self.log = workdir / "mount.log"
        # Every emulator is account 123456789012: a cache of each test's own, never the
        # user's default one shared across tests (an --cache-dir in extra wins).
        command = [
            *GLACIERFS,
            "mount",
            str(self.mountpoint),
            "--foreground",
            "--endpoint-url",
            endpoint,
            "--region",
            "us-east-1",
            "--state-dir",
            str(self.state),
            "--cache-dir",
            str(workdir / "cache"),
            "--log-file",
            str(self.log),
            *extra,
        ]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not is_mounted(self.mountpoint):
            if self.process.poll() is not None:
                raise RuntimeError(f"glacierfs exited with {self.process.returncode}:\n{self.log_text()}")
            if time.monotonic() > deadline:
                self.unmount()
                raise RuntimeError(f"glacierfs did not mount within {timeout}s:\n{self.log_text()}")
            time.sleep(0.05)

    def path(self, *parts: str) -> Path:
        return self.mountpoint.joinpath(*parts)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def unmount(self) -> None:
        """fusermount -u, then -uz, then terminate, then kill."""
        if (
            is_mounted(self.mountpoint)
            and subprocess.run([fusermount(), "-u", str(self.mountpoint)], capture_output=True).returncode
        ):
            subprocess.run([fusermount(), "-uz", str(self.mountpoint)], capture_output=True)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    @property
    def pid(self) -> int:
        return self.process.pid


def daemon_pid(mount_output: str) -> int:
    """The daemon's PID from `glacierfs mount`'s "mounted at ... (pid N)"."""
    import re

    match = re.search(r"\(pid (\d+)\)", mount_output)
    assert match, mount_output
    return int(match[1])


def stop_daemon(pid: int, timeout: float = 10) -> bool:
    """Wait for a daemonized mount (not our child) to exit after its unmount;
    terminate, then kill it by its PID if it lingers. True if it exited by itself."""

    def alive() -> bool:
        try:
            return "zombie" not in Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + timeout
    while alive():
        if time.monotonic() > deadline:
            for signum in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    return False
                time.sleep(1)
                if not alive():
                    break
            return False
        time.sleep(0.05)
    return True


def wait_for(condition, timeout: float = 20, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll ``condition`` until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def read_when_ready(path: Path, timeout: float = 20) -> bytes:
    """Read a file whose retrieval may still be running (EAGAIN)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return path.read_bytes()
        except OSError as error:
            if error.errno != errno.EAGAIN or time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def read_errno(path: Path) -> int | None:
    """The errno reading ``path`` fails with, or None if it reads."""
    try:
        path.read_bytes()
    except OSError as error:
        return error.errno
    return None


def read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def run(
    *command: str | os.PathLike[str], cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True, check=check, timeout=300)


# A generated inventory --------------------------------------------------------

INVENTORY_ARN = "arn:aws:glacier:us-east-1:123456789012:vaults/{vault}"
# Every description format of names.py, and the hostile and broken ones, by
# index: archive ``i`` has format FORMATS[i % len(FORMATS)] when
# i % 100 < len(FORMATS), and glacierfs's own FastGlacier v4 otherwise.
FORMATS = (
    "fastglacier-v3",
    "fastglacier-v1",
    "mt2",
    "mt1",
    "cloudberry",
    "qnap",
    "raw",
    "empty",
    "broken",
    "spaces",
    "backslash",
    "duplicate",
)


def generated_archive(index: int, kind: str | None = None) -> tuple[dict[str, object], str | None]:
    """Archive ``index`` of a generated inventory, as the service's JSON words it, and
    the path glacierfs shows it at (None: _unnamed/ID). ``kind``: its description's
    format (FORMATS, or "fastglacier-v4") whatever the index."""
    import base64
    import json as json_module

    from glacierfs import names, timestamps

    archive_id = f"{index:012d}" + "A" * 126
    folder = f"dir{index // 1000 % 1000:03d}"
    name = f"file{index:07d}.dat"
    mtime = 1_600_000_000 + index
    if kind is None:
        kind = FORMATS[index % 100] if index % 100 < len(FORMATS) else "fastglacier-v4"

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    def mt(version: str, fields: dict[str, str]) -> str:
        raw = json_module.dumps(fields, separators=(",", ":")).encode()
        if version == "mt1":
            raw = raw.decode("latin-1").encode()
        return f"{version} " + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    path: str | None = f"{folder}/{name}"
    stamp = timestamps.compact(mtime)
    if kind == "fastglacier-v4":
        description = names.encode(f"{folder}/{name}", mtime)
    elif kind == "fastglacier-v3":
        description = f"<m><v>3</v><p>{b64(f'{folder}/{name}')}</p><lm>{stamp}</lm><ce>0:0:abc</ce></m>"
    elif kind == "fastglacier-v1":
        description = f"<ArchiveMetadata><Path>{b64(f'{folder}/{name}')}</Path></ArchiveMetadata>"
    elif kind in ("mt1", "mt2"):
        description = mt(kind, {"filename": f"{folder}/{name}", "mtime": stamp})
    elif kind == "cloudberry":
        description = json_module.dumps({"Path": f"C:\\{folder}\\{name}", "UTCDateModified": stamp, "Flags": 0})
        path = f"C:/{folder}/{name}"
    elif kind == "qnap":
        description = json_module.dumps({"path": f"/{folder}/{name}", "type": "file"})
    elif kind == "raw":
        description = f"{folder}/{name}"
    elif kind == "empty":
        description, path = "", None
    elif kind == "broken":
        description, path = "<m><v>4</v><p>!!!</p><lm>20200101T000000Z</lm></m>", None
    elif kind == "spaces":
        path = f"{folder}/ {name} "
        description = names.encode(path, mtime)
    elif kind == "backslash":
        path = f"{folder}/back\\slash-{name}"
        description = names.encode(path, mtime)
    else:  # an older upload of the name archive index + 1 has (a FastGlacier v4 name): it gets a suffix
        wanted = f"dir{(index + 1) // 1000 % 1000:03d}/file{index + 1:07d}.dat"
        description = names.encode(wanted, mtime)
        path = f"{wanted}.older-{timestamps.compact(1_700_000_000 + index - 2)}-{archive_id[:8]}"
    created = timestamps.iso(1_700_000_000 + index - (2 if kind == "duplicate" else 0))
    item = {
        "ArchiveId": archive_id,
        "ArchiveDescription": description,
        "CreationDate": created[:-1] + ".000Z",
        "Size": 1000 + index,
        "SHA256TreeHash": "0" * 64,
    }
    return item, path


def write_generated_inventory(
    path: Path, count: int, vault: str = "big", date: str = "2026-01-01T00:00:00Z", kind: str | None = None
) -> int:
    """A generated inventory of ``count`` archives in the service's JSON, written as a
    stream (compact, in the service's key order); its size in bytes. ``kind``: as
    ``generated_archive``'s, for every archive."""
    import json as json_module

    with open(path, "w", encoding="ascii") as out:
        out.write(json_module.dumps({"VaultARN": INVENTORY_ARN.format(vault=vault), "InventoryDate": date})[:-1])
        out.write(',"ArchiveList":[')
        for index in range(count):
            if index:
                out.write(",")
            out.write(json_module.dumps(generated_archive(index, kind)[0], separators=(",", ":")))
        out.write("]}")
        return out.tell()
