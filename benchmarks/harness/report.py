"""Report output: numbers formatted for tables, aligned text and markdown tables, JSON files."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal


def fmt(value: float | None, spec: int | str = 2, *, missing: str = "-") -> str:
    """``value`` for a table cell: ``missing`` when None or NaN; an int ``spec`` is a number of decimals with
    thousands separators (``1,234.57``), a str ``spec`` a format spec (``".3g"``, ``"d"``)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    if isinstance(spec, int):
        return f"{value:,.{spec}f}"
    return format(value, spec)


def table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    align: str | None = None,
    widths: Sequence[int] | None = None,
    sep: str = "  ",
    rule: Literal["columns", "full"] | None = "columns",
    markdown: bool = False,
) -> str:
    """An aligned table of already formatted cells, as one string of lines (no trailing newline).

    ``align`` has one letter per column, ``l`` or ``r`` (default: the first column left, the others right).
    A column is as wide as its widest cell or header, or ``widths[i]`` if that is more. Plain tables join the
    cells with ``sep`` and, under the header, draw a ``rule`` of dashes per column (``"columns"``), one across the
    whole line (``"full"``) or none (``None``); headers are aligned like their columns. ``markdown`` tables are
    ``| a | b |`` with the headers left-aligned and a ``|---|---|`` rule.
    """
    n = len(header)
    align = align or "l" + "r" * (n - 1)
    if len(align) != n or any(len(row) != n for row in rows):
        raise ValueError(f"table: {n} headers, {len(align)} alignments, row lengths {sorted({len(r) for r in rows})}")
    minimum = widths or [0] * n
    size = [max(minimum[i], len(header[i]), *(len(row[i]) for row in rows)) for i in range(n)]

    def cells(row: Sequence[str], how: str) -> list[str]:
        return [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, size, how, strict=True)]

    if markdown:
        lines = ["| " + " | ".join(cells(header, "l" * n)) + " |", "|" + "|".join("-" * (w + 2) for w in size) + "|"]
        lines += ["| " + " | ".join(cells(row, align)) + " |" for row in rows]
        return "\n".join(lines)
    lines = [sep.join(cells(header, align))]
    if rule == "columns":
        lines.append(sep.join("-" * w for w in size))
    elif rule == "full":
        lines.append("-" * len(lines[0]))
    lines += [sep.join(cells(row, align)) for row in rows]
    return "\n".join(lines)


def write_json(path: Path | str, data: Any) -> None:
    """``data`` as indented JSON in ``path`` (what JSON cannot hold is written as its ``str``)."""
    Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n")
