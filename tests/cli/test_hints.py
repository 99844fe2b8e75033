"""The ``fluxserve`` command the hints spell: a bare name only when PATH finds this install's script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fluxserve import hints
from fluxserve.hints import cli_command, command


def _venv(root: Path) -> tuple[Path, Path]:
    """A fake ``root/.venv/bin`` with a python and a fluxserve script; (python, fluxserve)."""
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    python, script = bin_dir / "python", bin_dir / "fluxserve"
    for path in (python, script):
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    return python, script


def test_bare_name_when_path_finds_this_installs_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    python, script = _venv(tmp_path)
    monkeypatch.setattr(sys, "executable", str(python))
    monkeypatch.setattr(hints.shutil, "which", lambda name: str(script) if name == "fluxserve" else None)
    assert cli_command() == "fluxserve"
    assert command("keys create --name me") == "fluxserve keys create --name me"


def test_bare_name_through_a_symlink_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pipx and ``~/.local/bin`` put a link to the script on PATH: still this install."""
    python, script = _venv(tmp_path)
    link = tmp_path / "on-path" / "fluxserve"
    link.parent.mkdir()
    link.symlink_to(script)
    monkeypatch.setattr(sys, "executable", str(python))
    monkeypatch.setattr(hints.shutil, "which", lambda name: str(link))
    assert cli_command() == "fluxserve"


def test_venv_path_relative_to_the_project_when_not_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What ./scripts/serve leaves: .venv/bin/fluxserve, not activated."""
    python, _script = _venv(tmp_path)
    monkeypatch.setattr(sys, "executable", str(python))
    monkeypatch.setattr(hints.shutil, "which", lambda name: None)
    monkeypatch.chdir(tmp_path)
    assert cli_command() == os.path.join(".venv", "bin", "fluxserve")
    assert command("keys create --name me") == ".venv/bin/fluxserve keys create --name me"
    # From inside the bin folder itself the script needs ./ (a bare name would be looked up on PATH).
    monkeypatch.chdir(tmp_path / ".venv" / "bin")
    assert cli_command() == "./fluxserve"


def test_absolute_path_outside_the_project_and_another_fluxserve_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    python, script = _venv(tmp_path / "my project")
    other = tmp_path / "elsewhere" / "fluxserve"
    other.parent.mkdir()
    other.write_text("#!/bin/sh\n")
    monkeypatch.setattr(sys, "executable", str(python))
    monkeypatch.setattr(hints.shutil, "which", lambda name: str(other))
    monkeypatch.chdir(other.parent)
    # Another install's fluxserve on PATH is not this one: the path, quoted for the shell (a space in it).
    assert cli_command() == f"'{script}'"


def test_module_form_without_any_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    python = tmp_path / "python"
    monkeypatch.setattr(sys, "executable", str(python))
    monkeypatch.setattr(hints.shutil, "which", lambda name: None)
    monkeypatch.chdir(tmp_path)
    assert cli_command() == "./python -m fluxserve"


def test_the_cli_prints_the_command_that_works(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hint printed by the real CLI, run without the venv on PATH, names this install's script."""
    monkeypatch.setattr(hints.shutil, "which", lambda name: None)
    monkeypatch.chdir(tmp_path)
    expected = cli_command()
    assert expected != "fluxserve"
    env = {**os.environ, "PATH": "/usr/bin:/bin", "FLUXSERVE_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "fluxserve.cli", "keys", "revoke", "nobody"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr
    assert f"({expected} keys list shows them)" in done.stderr
