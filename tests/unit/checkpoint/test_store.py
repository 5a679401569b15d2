"""The checkpoint store on local disk: round trips, hashes, listings, atomic writes, and
the errors a user reads when a location is wrong, a key is missing or the disk is full."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deepyard.checkpoint.store import Store, StoredFile
from deepyard.errors import CheckpointError

KEY = "step-00000100/rank0/model.pt"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(str(tmp_path / "ckpt"))


def test_a_plain_path_is_made_absolute_and_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = Store.open("runs/ckpt")
    assert store.uri == str(tmp_path / "runs" / "ckpt")
    assert store.is_local and store.local_path().is_dir()
    assert store.local_path("a/b") == tmp_path / "runs" / "ckpt" / "a" / "b"
    assert Store.open(f"file://{tmp_path}/other").local_path() == tmp_path / "other"
    free = store.free_bytes()
    assert free is not None and free > 0


def test_put_file_hashes_while_copying_and_reads_back(store: Store, tmp_path: Path) -> None:
    data = os.urandom(4 * 1024 * 1024 + 123)  # more than one copy chunk
    source = tmp_path / "model.pt"
    source.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()

    assert store.put_file(source, KEY) == (expected, len(data))
    assert store.exists(KEY) and not store.exists("step-00000100/rank0/optim.pt")
    assert store.sha256(KEY) == expected
    assert store.get_bytes(KEY) == data
    store.get_file(KEY, tmp_path / "back" / "model.pt")
    assert (tmp_path / "back" / "model.pt").read_bytes() == data
    assert sorted(os.listdir(store.local_path("step-00000100/rank0"))) == ["model.pt"]


def test_put_file_of_a_file_already_in_place_only_hashes_it(store: Store) -> None:
    in_place = store.local_path(KEY)
    in_place.parent.mkdir(parents=True)
    in_place.write_bytes(b"written by DeepSpeed")
    inode = in_place.stat().st_ino

    digest, size = store.put_file(in_place, KEY)

    assert (digest, size) == (hashlib.sha256(b"written by DeepSpeed").hexdigest(), 20)
    assert in_place.stat().st_ino == inode  # not copied, not renamed
    assert os.listdir(in_place.parent) == ["model.pt"]


def test_put_bytes_replaces_a_file_and_leaves_no_temporary(store: Store) -> None:
    store.put_bytes("lineage/step-00000100/manifest.json", b'{"v": 1}')
    store.put_bytes("lineage/step-00000100/manifest.json", b'{"v": 2}')

    assert store.get_bytes("lineage/step-00000100/manifest.json") == b'{"v": 2}'
    assert os.listdir(store.local_path("lineage/step-00000100")) == ["manifest.json"]


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
    with pytest.raises(ValueError, match="never deletes the whole store"):
        store.delete_dir("")
    with pytest.raises(ValueError, match="relative"):
        store.put_bytes("../outside", b"")


def test_an_unsupported_scheme_names_the_uri_and_the_fix() -> None:
    with pytest.raises(CheckpointError) as info:
        Store.open("ftp://host/ckpt")
    assert str(info.value) == (
        "checkpoint.uri='ftp://host/ckpt' is not a supported storage URI; "
        "use a local path, file://… or s3://bucket/prefix"
    )


def test_an_invalid_s3_uri_hides_credentials_written_into_it() -> None:
    with pytest.raises(CheckpointError, match="endpoint_override=host:port") as info:
        Store.open("s3://AKID:SECRET@bucket/ckpt?endpoint=localhost:9000")
    assert "SECRET" not in str(info.value) and "'endpoint'" in str(info.value)


def test_reading_a_missing_key_names_the_location_and_key(store: Store, tmp_path: Path) -> None:
    expected = f"checkpoint.uri={store.uri}: a/step-00000100/manifest.json does not exist; "
    for read in (
        lambda: store.get_bytes("a/step-00000100/manifest.json"),
        lambda: store.sha256("a/step-00000100/manifest.json"),
        lambda: store.get_file("a/step-00000100/manifest.json", tmp_path / "m.json"),
    ):
        with pytest.raises(CheckpointError) as info:
            read()
        assert str(info.value).startswith(expected)
    assert not (tmp_path / "m.json").exists()


# A child process writes a 2 MiB file into a 1 MiB space and reports what it saw.
FILL_DISK = """
import json, resource, sys
from pathlib import Path
from deepyard.checkpoint.store import Store
from deepyard.errors import CheckpointError

disk, source, limit = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
if limit == "rlimit":
    resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20))
store = Store.open(str(disk / "ckpt"))
errors = []
for put in (lambda: store.put_file(source, KEY), lambda: store.put_bytes(KEY, source.read_bytes())):
    try:
        put()
        errors.append(None)
    except CheckpointError as exc:
        errors.append(str(exc))
files = sorted(str(p.relative_to(disk)) for p in disk.rglob("*") if p.is_file())
print(json.dumps({"uri": store.uri, "errors": errors, "files": files}))
"""


def _user_namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    done = subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=10)
    return done.returncode == 0


@pytest.mark.parametrize("limit", ["tmpfs", "rlimit"])
def test_a_full_disk_names_the_key_and_leaves_no_partial_file(tmp_path: Path, limit: str) -> None:
    """`tmpfs`: a real 1 MiB tmpfs mounted in a user namespace, so ENOSPC. `rlimit`: where
    user namespaces are off, RLIMIT_FSIZE = 1 MiB on the writer instead, so EFBIG."""
    disk, source = tmp_path / "disk", tmp_path / "model.pt"
    disk.mkdir()
    source.write_bytes(os.urandom(2 * 2**20))
    script = f"KEY = {KEY!r}\n{FILL_DISK}"
    command = [sys.executable, "-c", script, str(disk), str(source), limit]
    if limit == "tmpfs":
        if not _user_namespaces_work():
            pytest.skip("unshare -rm (user and mount namespaces) is not allowed here")
        mount = 'mount -t tmpfs -o size=1m tmpfs "$0" && exec "$@"'
        command = ["unshare", "-rm", "sh", "-c", mount, str(disk), *command]

    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)

    assert report["files"] == []  # no partial file under the key, no temporary either
    for error in report["errors"]:
        assert error is not None and KEY in error
        assert error.startswith(f"checkpoint.uri={report['uri']}: ")
        if limit == "tmpfs":
            assert f"no space left on device writing {KEY}: 2097152 bytes needed, " in error
            assert "free; free space or point checkpoint.uri at a larger disk" in error
        else:
            assert f"file too large writing {KEY} (2097152 bytes)" in error
            assert "ulimit -f" in error
