"""Progress read from a prediction's logs: the tqdm lines the official clients parse.

Predictors log one tqdm-format line per step (`` 40%|████      | 4/10 [00:01<00:02, 2.5it/s]``);
replicate-python's ``Prediction.progress`` and replicate-javascript's ``parseProgressFromLogs`` read
the last such line. The web page (in JavaScript), the pages' first rendering and the CLI use the same
pattern.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: A tqdm progress line: percent, current step, total steps (the clients' pattern).
PROGRESS_LINE = re.compile(r"^\s*(\d+)%\s*\|.+?\|\s*(\d+)/(\d+)", re.MULTILINE)


@dataclass(frozen=True)
class Progress:
    """Where the last progress bar in the logs stands."""

    percent: int
    current: int
    total: int


def parse_progress(logs: str | None) -> Progress | None:
    """The last progress line of ``logs``, or None."""
    matches = PROGRESS_LINE.findall(logs or "")
    if not matches:
        return None
    percent, current, total = matches[-1]
    return Progress(int(percent), int(current), int(total))


def is_progress_line(line: str) -> bool:
    """Whether ``line`` is a tqdm progress line."""
    return PROGRESS_LINE.match(line) is not None
