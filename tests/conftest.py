"""Shared fixtures: fake credentials, the emulator in-process and over HTTP, plain boto3."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

# Never reach a real account from the tests, whatever the environment holds.
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
    os.environ.pop(_name, None)
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_CONFIG_FILE=os.devnull,
    AWS_SHARED_CREDENTIALS_FILE=os.devnull,
)

from glacierfs.emulator import Emulator  # noqa: E402
from glacierfs.testing import Mount, ServedEmulator  # noqa: E402

MiB = 1 << 20
WRITE_BACK = ("--write-back", "--part-size", str(MiB), "--poll-interval", "0.2", "--cleanup-interval", "0.3")
HOLD = ("--settle", "600")  # nothing goes up before fsync or `glacierfs umount`


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    """The in-process emulator (one per test process: moto's state is global)."""
    with Emulator() as running:
        yield running


@pytest.fixture
def inprocess(emulator: Emulator) -> Iterator[Emulator]:
    """The in-process emulator, empty and with default settings."""
    emulator.reset()
    yield emulator
    emulator.reset()


@pytest.fixture
def held(inprocess: Emulator, tmp_path: Path) -> Iterator[Mount]:
    """A write-back mount, with a vault v, whose queue waits for fsync or umount."""
    mounted = Mount(tmp_path, inprocess.url, *WRITE_BACK, *HOLD)
    mounted.path("v").mkdir()
    yield mounted
    mounted.unmount()


@pytest.fixture(scope="session")
def served() -> Iterator[ServedEmulator]:
    server = ServedEmulator()
    yield server
    server.stop()


@pytest.fixture(params=["inprocess", "http"])
def endpoint(request: pytest.FixtureRequest) -> str:
    """Each test using this runs against both the in-process and the subprocess emulator."""
    if request.param == "inprocess":
        return request.getfixturevalue("inprocess").url
    return request.getfixturevalue("served").url


def boto_client(url: str, attempts: int = 1) -> boto3.client:
    return boto3.client(
        "glacier",
        endpoint_url=url,
        region_name="us-east-1",
        config=Config(retries={"mode": "standard", "total_max_attempts": attempts}),
    )


def archives(url: str, vault: str) -> list[dict]:
    """What the vault holds by an inventory job, asked with plain boto3 (job delay 0)."""
    client = boto_client(url)
    job = client.initiate_job(vaultName=vault, jobParameters={"Type": "inventory-retrieval"})
    return json.loads(client.get_job_output(vaultName=vault, jobId=job["jobId"])["body"].read())["ArchiveList"]


@pytest.fixture
def boto(endpoint: str):  # type: ignore[no-untyped-def]
    """Plain boto3, no retries: what reached the emulator, seen without our own code."""
    return boto_client(endpoint)


_vault_counter = iter(range(1_000_000))


@pytest.fixture
def vault(boto) -> str:  # type: ignore[no-untyped-def]
    name = f"test-vault-{os.getpid()}-{next(_vault_counter)}"
    boto.create_vault(vaultName=name)
    return name


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """Keep each phase's report on the item, so fixtures can dump logs of failed tests."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """Run a mount with these variables (its subprocess copies the environment)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``where``: a local disk that fills up (needs root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    where.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
