"""The checkpoint store against a real S3 protocol server (moto in server mode on 127.0.0.1):
the local round trips again, both ways of naming an endpoint, and the errors a user reads
for wrong credentials or an unreachable endpoint."""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from deepyard.checkpoint.store import Store, StoredFile
from deepyard.errors import CheckpointError
from deepyard.testing.s3 import moto_s3

pytestmark = pytest.mark.integration

BUCKET = "deepyard-checkpoints"
KEY = "step-00000100/rank0/model.pt"
ENV_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """host:port of a moto S3 server holding BUCKET, with dummy credentials in the env."""
    with moto_s3(BUCKET) as endpoint:
        yield endpoint


@pytest.fixture
def store(s3_endpoint: str) -> Store:
    """A fresh prefix in BUCKET, the endpoint named in the URI's query."""
    query = f"endpoint_override={s3_endpoint}&scheme=http&region=us-east-1"
    return Store.open(f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}?{query}")


def test_put_file_hashes_while_uploading_and_reads_back(store: Store, tmp_path: Path) -> None:
    data = os.urandom(4 * 1024 * 1024 + 123)  # more than one copy chunk
    source = tmp_path / "model.pt"
    source.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()

    assert not store.is_local and store.free_bytes() is None
    assert store.put_file(source, KEY) == (expected, len(data))
    assert store.exists(KEY) and not store.exists("step-00000100/rank0/optim.pt")
    assert store.sha256(KEY) == expected
    assert store.get_bytes(KEY) == data
    store.get_file(KEY, tmp_path / "back.pt")
    assert (tmp_path / "back.pt").read_bytes() == data
    with pytest.raises(ValueError, match="not local"):
        store.local_path(KEY)


def test_put_bytes_replaces_an_object(store: Store) -> None:
    store.put_bytes("lineage/step-00000100/manifest.json", b'{"v": 1}')
    store.put_bytes("lineage/step-00000100/manifest.json", b'{"v": 2}')
    assert store.get_bytes("lineage/step-00000100/manifest.json") == b'{"v": 2}'
    assert store.list_files("lineage") == [StoredFile("lineage/step-00000100/manifest.json", 8)]


def test_listings_and_delete(store: Store) -> None:
    for key in ("a/step-00000200/manifest.json", "a/step-00000100/rank1/x", "a/step-00000100/r0"):
        store.put_bytes(key, b"12345")

    assert store.list_dirs() == ["a"]
    assert store.list_dirs("a") == ["step-00000100", "step-00000200"]
    assert store.list_dirs("a/step-00000100") == ["rank1"]
    assert store.list_files("a/step-00000100") == [
        StoredFile("a/step-00000100/r0", 5),
        StoredFile("a/step-00000100/rank1/x", 5),
    ]
    assert store.list_dirs("missing") == [] and store.list_files("missing") == []

    store.delete_dir("a/step-00000100")
    store.delete_dir("a/step-00000100")  # already gone: no error
    assert store.list_dirs("a") == ["step-00000200"]
    assert [f.key for f in store.list_files("")] == ["a/step-00000200/manifest.json"]


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_a_failed_upload_leaves_no_object_under_the_key(store: Store) -> None:
    # pyarrow completes a multipart upload even when it is closed after an error, so the
    # store must delete what it published. Reading /proc/self/mem at offset 0 fails (EIO)
    # after the upload has begun.
    with pytest.raises(CheckpointError, match=f"writing {KEY} failed: input/output error"):
        store.put_file(Path("/proc/self/mem"), KEY)
    assert not store.exists(KEY)


def test_the_endpoint_can_come_from_aws_endpoint_url(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{s3_endpoint}")
    store = Store.open(f"s3://{BUCKET}/from-env")
    store.put_bytes("manifest.json", b"{}")
    assert store.get_bytes("manifest.json") == b"{}"


def test_reading_a_missing_key_names_the_location_and_key(store: Store) -> None:
    with pytest.raises(CheckpointError) as info:
        store.get_bytes("a/step-00000100/manifest.json")
    assert str(info.value).startswith(
        f"checkpoint.uri={store.uri}: a/step-00000100/manifest.json does not exist; "
    )


def test_wrong_credentials_name_the_env_vars(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    import moto.settings

    # moto then checks every request's access key against its (empty) IAM user list.
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    with pytest.raises(CheckpointError) as info:
        store.put_bytes(KEY, b"weights")
    message = str(info.value)
    assert message.startswith(f"checkpoint.uri={store.uri}: access denied writing {KEY} (")
    assert "INVALID_ACCESS_KEY_ID" in message
    assert all(name in message for name in ENV_VARS)
    assert "?endpoint_override=host:port&scheme=http&region=…" in message


def test_an_unreachable_endpoint_names_the_env_vars() -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"s3://{BUCKET}/ckpt?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    # The URI's filesystem, with one attempt instead of the SDK's three (about 6 s).
    filesystem = pafs.S3FileSystem(
        endpoint_override=f"127.0.0.1:{port}",
        scheme="http",
        region="us-east-1",
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1),
    )
    store = Store(uri, filesystem, f"{BUCKET}/ckpt")

    with pytest.raises(CheckpointError) as info:
        store.get_bytes("manifest.json")
    message = str(info.value)
    assert message.startswith(
        f"checkpoint.uri={uri}: cannot reach the storage endpoint reading manifest.json ("
    )
    assert all(name in message for name in ENV_VARS)


def test_a_job_checkpoints_to_s3_and_resumes_from_it(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torchrun job → S3 checkpoints; preempted (SIGTERM fault) → rerun resumes from S3."""
    import json
    import subprocess
    import sys

    uri = f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}/ckpts"
    examples = Path(__file__).resolve().parents[2] / "jobs" / "examples"
    command = [
        str(Path(sys.executable).with_name("torchrun")),
        "--nproc-per-node",
        "2",
        "-m",
        "deepyard.train",
        "--spec",
        str(examples / "digits_cnn.yaml"),
        "--json",
        *("--set", f"output_dir={tmp_path}"),
        *("--set", "training.epochs=null", "--set", "training.max_steps=12"),
        *("--set", f"checkpoint.uri={uri}", "--set", "checkpoint.every_steps=4"),
        *("--set", "faults=[{kind: sigterm, step: 6}]"),
    ]
    env = {**os.environ, "AWS_ENDPOINT_URL": f"http://{s3_endpoint}", "AWS_REGION": "us-east-1"}
    first = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert first.returncode != 0, first.stdout[-2000:]  # torchrun reports the SIGTERM
    stopped = json.loads(first.stdout.strip().splitlines()[-1])
    assert stopped["status"] == "preempted"
    saved_at = stopped["checkpoints"]["last_step"]
    assert saved_at >= 6

    again = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert (summary["start_step"], summary["steps"]) == (saved_at, 12)

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{s3_endpoint}")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    store = Store.open(uri)
    [lineage] = [d for d in store.list_dirs() if store.exists(f"{d}/lineage.json")]
    published = [
        d for d in store.list_dirs(lineage) if store.exists(f"{lineage}/{d}/manifest.json")
    ]
    assert published[-1] == "step-000000012"
    assert not (tmp_path / "staging").exists()
