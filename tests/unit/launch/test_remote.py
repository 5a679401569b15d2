"""Where `deepyard submit` finds the cluster's token: --token-file, then Ray's own order
($RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token); a named file that is missing
is an error, not a silent fall-through to another token."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepyard.launch import remote
from deepyard.launch.remote import ClusterUsageError, find_token


def test_token_sources_in_rays_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    default = tmp_path / "home" / "auth_token"
    monkeypatch.setattr(remote, "DEFAULT_TOKEN_PATH", default)
    assert find_token() is None
    default.parent.mkdir()
    default.write_text("from-home\n")
    assert find_token() == "from-home"
    path = tmp_path / "path-token"
    path.write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path))
    assert find_token() == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert find_token() == "from-env"
    given = tmp_path / "given"
    given.write_text(" from-flag \n")
    assert find_token(given) == "from-flag"
    with pytest.raises(ClusterUsageError, match="no such file"):
        find_token(tmp_path / "missing")


def test_status_reads_the_reason_from_the_jobs_log() -> None:
    """A running job's last line may say what it waits for; a failed job's `error:` line
    says why it failed (Ray's own message is only "entrypoint failed with exit code 1")."""
    log = (
        "[digits-cnn] step 20/100 loss 0.3\n"
        "attempt 1 failed: worker rank 1 died; restarting\n"
        "error: lost 10.0.0.7 (node 3f2a1b9c), and the 1 node(s) left cannot hold the job\n"
        "some trailing line from Ray\n"
    )
    assert remote._error_line(log) == (
        "lost 10.0.0.7 (node 3f2a1b9c), and the 1 node(s) left cannot hold the job"
    )
    assert remote._error_line("all good\n") is None
    waiting = "[job] waiting for resources: needs 4 GPU (2 workers x 2), cluster has 0 free"
    assert remote._waiting_line(f"starting\n{waiting}\n") == waiting[6:]
    assert remote._waiting_line(f"{waiting}\n[job] step 1/10\n") is None
