"""boto 2.49, the seeds' own Glacier client, against the emulator over HTTP.

boto2 runs in a virtualenv of its own (boto 2 and glacierfs's boto3 never
share one), kept under this checkout's ``.venv`` between runs, or under
pytest's temporary directory when the tests run outside it. The test skips,
saying why, where boto 2.49 cannot be installed. The Python 3 fixes boto2
needs live in that virtualenv's sitecustomize (the interpreter's) and in the
scenario (boto2's own, see boto2_scenario.py), never in glacierfs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from glacierfs.emulator import control
from glacierfs.testing import ServedEmulator
from glacierfs.treehash import tree_hash

from .conftest import archives, boto_client

REPO = Path(__file__).resolve().parents[1]
SCENARIO = Path(__file__).with_name("boto2_scenario.py")
BOTO2 = "boto==2.49.0"

# Imported by boto 2.49, gone from newer Pythons: collections' ABC aliases
# (removed in 3.10) and the imp module (removed in 3.12, used by boto.plugin).
SITECUSTOMIZE = '''\
"""Python 3 compatibility for boto 2.49, in this test virtualenv only."""
import collections
import collections.abc
import importlib.util
import sys
import types

for _name in ("Callable", "Iterable", "Mapping", "MutableMapping", "MutableSet", "Sequence"):
    if not hasattr(collections, _name):
        setattr(collections, _name, getattr(collections.abc, _name))

if importlib.util.find_spec("imp") is None:
    _imp = types.ModuleType("imp")

    def _find_module(name, path=None):
        raise ImportError(f"imp.find_module is not available: {name}")

    _imp.find_module = _find_module
    sys.modules["imp"] = _imp
'''


def _cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkout's own .venv when the tests run in it; else pytest's temporary directory."""
    venv = REPO / ".venv"
    if venv.is_dir() and Path(sys.prefix).resolve() == venv.resolve():
        return venv / "cache"
    return tmp_path_factory.getbasetemp() / "cache"


def _run(*command: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=timeout, check=False)


def _skip(what: str, done: subprocess.CompletedProcess[str]) -> None:
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    pytest.skip(f"{what}: {' / '.join(tail) or f'exit status {done.returncode}'}")


@pytest.fixture(scope="session")
def boto2_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Python with boto 2.49 and nothing of glacierfs's, built once and kept."""
    root = _cache_root(tmp_path_factory)
    venv = root / f"boto2.49-py{sys.version_info.major}.{sys.version_info.minor}"
    python = venv / "bin" / "python"
    if (venv / "ready").exists():
        return python
    root.mkdir(parents=True, exist_ok=True)
    building = root / f"{venv.name}.building-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    try:
        done = _run(sys.executable, "-m", "venv", building)
        if done.returncode:
            _skip("cannot create a virtualenv for boto 2.49", done)
        done = _run(building / "bin" / "python", "-m", "pip", "install", "--quiet", BOTO2)
        if done.returncode:
            _skip(f"cannot install {BOTO2} (pip install failed)", done)
        done = _run(building / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
        Path(done.stdout.strip(), "sitecustomize.py").write_text(SITECUSTOMIZE)
        done = _run(building / "bin" / "python", "-c", "import boto.glacier.layer2")
        if done.returncode:
            _skip(f"{BOTO2} does not import on Python {sys.version.split()[0]}", done)
        (building / "ready").touch()
        shutil.rmtree(venv, ignore_errors=True)
        building.rename(venv)  # whole or not at all: a run cut short leaves no half-built one
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return python


@pytest.mark.slow
def test_boto2_uploads_retrieves_and_lists_against_the_emulator(
    boto2_python: Path, served: ServedEmulator, tmp_path: Path
) -> None:
    vault = f"boto2-{os.getpid()}"
    environment = {**os.environ, "BOTO_CONFIG": os.devnull}  # no ~/.boto or /etc/boto.cfg
    try:
        done = subprocess.run(
            [str(boto2_python), str(SCENARIO), served.url, vault, str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env=environment,
        )
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        boto = boto_client(served.url)
        data = (tmp_path / "source.bin").read_bytes()

        # boto2's list_jobs reads every key with [] (nulls included) for both kinds of job.
        # (Listed before the inventory below adds one of its own.)
        listed = sorted([job["JobId"], job["Action"]] for job in boto.list_jobs(vaultName=vault)["JobList"])
        assert result["listed_jobs"] == listed
        assert [job_id for job_id, action in listed if action == "InventoryRetrieval"] == [result["inventory_job"]]

        # Three archives, each whole and with its tree hash: the Writer's, the
        # concurrent uploader's, and the resumed upload's.
        stored = {a["ArchiveDescription"]: a for a in archives(served.url, vault)}
        assert {name: stored[f"boto2 {name}"]["ArchiveId"] for name in result["archives"]} == result["archives"]
        assert {(a["Size"], a["SHA256TreeHash"]) for a in stored.values()} == {(len(data), tree_hash(data))}
        assert boto.list_multipart_uploads(vaultName=vault)["UploadsList"] == []

        # The retrieval, downloaded by boto2 in 4 MiB chunks, each checked against its tree hash.
        assert result["downloaded_sha256"] == result["source_sha256"] == hashlib.sha256(data).hexdigest()
        job = boto.describe_job(vaultName=vault, jobId=result["job"]["id"])
        assert job["Completed"] and job["ArchiveId"] == result["archives"]["writer"]
        assert result["job"] == {
            "id": job["JobId"],
            "completed": True,
            "archive_id": job["ArchiveId"],
            "size": job["ArchiveSizeInBytes"],
        }

        # Notifications set, read and deleted by boto2; gone for boto3 too.
        assert result["notifications"] == {
            "SNSTopic": "arn:aws:sns:us-east-1:123456789012:glacier-jobs",
            "Events": ["ArchiveRetrievalCompleted", "InventoryRetrievalCompleted"],
        }
        assert result["notifications_after_delete"] == 404
        with pytest.raises(boto.exceptions.ResourceNotFoundException):
            boto.get_vault_notifications(vaultName=vault)
    finally:
        control.reset(served.url)
