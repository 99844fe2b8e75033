"""How to spell the ``fluxserve`` command in the hints the server and the CLI print.

``./scripts/serve`` installs into ``./.venv`` and never activates it, so a bare ``fluxserve`` is often not on the
user's PATH (or is another install). :func:`cli_command` gives a command that runs *this* install from the
user's shell: ``fluxserve`` when PATH finds this install's script, else that script's path.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

SCRIPT = "fluxserve.exe" if os.name == "nt" else "fluxserve"


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or os.path.samefile(a, b)
    except OSError:
        return False


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies inside it (``.venv/bin/fluxserve``), else absolute."""
    try:
        relative = path.relative_to(Path.cwd())
    except ValueError:
        return str(path)
    # "fluxserve" alone would be looked up on PATH again: a script in the working directory needs "./".
    return str(relative) if len(relative.parts) > 1 else f".{os.sep}{relative}"


def cli_command() -> str:
    """The ``fluxserve`` command as the user can type it: ``fluxserve`` when that name on PATH is the script next
    to the running interpreter (an activated venv, a pipx or system install), else the path of that script
    (``.venv/bin/fluxserve`` from the project folder). Without such a script (running from a source tree),
    ``fluxserve`` if PATH has one, else ``python -m fluxserve`` with this interpreter."""
    own = Path(sys.executable).parent / SCRIPT
    found = shutil.which("fluxserve")
    if own.is_file():
        if found is not None and _same_file(Path(found), own):
            return "fluxserve"
        return shlex.quote(_shown(own))
    if found is not None:
        return "fluxserve"
    return f"{shlex.quote(_shown(Path(sys.executable)))} -m fluxserve"


def command(args: str) -> str:
    """``fluxserve ARGS`` spelled as :func:`cli_command` says, e.g. ``command("keys create --name me")``."""
    return f"{cli_command()} {args}"
