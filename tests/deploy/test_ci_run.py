""".ci/run: installs what is missing, runs exactly `make test`, and passes its failure on.

`make`, `apt-get` and `sudo` are replaced by recording stubs on PATH, so these tests check the
script's own logic in a second, without running the suite inside the suite.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from deploy_helpers import REPO

CI_RUN = REPO / ".ci" / "run"


def stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f'#!/bin/sh\necho "{name} $*" >> "$CALLS"\n{body}\n')
    path.chmod(0o755)


def run_ci(tmp_path: Path, *, make_exit: int, with_nginx: bool) -> tuple[int, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    calls.touch()
    stub(bin_dir, "make", f'pwd >> "$CALLS"\nexit {make_exit}')
    stub(bin_dir, "apt-get", "exit 0")
    stub(bin_dir, "sudo", 'exec "$@"')
    if with_nginx:
        stub(bin_dir, "nginx", "exit 0")
    python3 = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    assert python3 is not None
    (bin_dir / "python3").symlink_to(python3)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",  # no /usr/sbin: a system nginx stays invisible
        "HOME": str(tmp_path),
        "CALLS": str(calls),
        "NGINX_SBIN_DIR": str(bin_dir),  # where the script also looks for a Debian nginx
    }
    result = subprocess.run(
        ["bash", str(CI_RUN)], env=env, capture_output=True, text=True, timeout=60
    )
    return result.returncode, calls.read_text().splitlines()


def test_ci_run_is_strict_bash() -> None:
    text = CI_RUN.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert os.access(CI_RUN, os.X_OK)
    assert subprocess.run(["bash", "-n", str(CI_RUN)], timeout=10).returncode == 0


def test_runs_exactly_make_test_from_the_repository_root(tmp_path: Path) -> None:
    code, calls = run_ci(tmp_path, make_exit=0, with_nginx=True)
    assert code == 0
    assert calls == ["make test", str(REPO)]  # nothing installed: nginx is there


@pytest.mark.parametrize("make_exit", [1, 2, 5])
def test_a_failing_suite_fails_the_run(tmp_path: Path, make_exit: int) -> None:
    # 5 is pytest's "no tests collected": it must not pass silently either
    code, calls = run_ci(tmp_path, make_exit=make_exit, with_nginx=True)
    assert code == make_exit
    assert calls[0] == "make test"


def test_installs_nginx_when_missing_before_the_suite(tmp_path: Path) -> None:
    code, calls = run_ci(tmp_path, make_exit=0, with_nginx=False)
    assert code == 0
    apt = [c for c in calls if c.startswith("apt-get")]
    assert apt[0] == "apt-get update -qq"
    assert apt[1].startswith("apt-get install -y")
    assert apt[1].split()[-1] == "nginx"
    assert calls.index(apt[1]) < calls.index("make test")
