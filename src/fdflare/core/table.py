"""Plain-text and markdown tables, and numbers printed as people write them.

The tables of ``evaluate``, ``spatial``, ``reproduce`` and ``demo`` are rendered here, so
they share one look: a text table has its first ``left`` columns aligned left and the rest
right, with a dashed rule under the header; a markdown table is a GitHub pipe table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["fmt_number", "plain", "render_table"]


def plain(value: Any) -> Any:
    """Return ``value`` as a plain Python scalar (``np.float64(2.0)`` -> ``2.0``).

    numpy scalars print as ``np.float64(nan)`` under ``repr`` since numpy 2; messages and
    JSON should show the number alone. Anything that is not a numpy scalar is returned as is.
    """
    item = getattr(value, "item", None)
    if item is not None and type(value).__module__ == "numpy":
        try:
            return item()
        except (TypeError, ValueError):
            return value
    return value


def fmt_number(value: Any, digits: int = 4, *, missing: str = "n/a") -> str:
    """Format a number with ``digits`` decimals; ``None`` and NaN print as ``missing``."""
    value = plain(value)
    if value is None:
        return missing
    if isinstance(value, float) and math.isnan(value):
        return missing
    return f"{value:.{digits}f}"


def render_table(
    head: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    markdown: bool = False,
    left: int = 1,
    notes: Sequence[str] = (),
) -> str:
    """Render a table of strings.

    Args:
        head: the column titles.
        rows: the cells, one sequence of strings per row.
        markdown: a GitHub pipe table instead of aligned text.
        left: how many leading columns are left-aligned in text (the rest align right).
        notes: lines printed after the table, after a blank line (``note: ...`` in text,
            ``- ...`` in markdown).
    """
    cells = [[str(c) for c in r] for r in rows]
    if markdown:  # a bare | inside a cell (|lon|) would end the cell: escape it
        head = [h.replace("|", "\\|") for h in head]
        cells = [[c.replace("|", "\\|") for c in r] for r in cells]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r) + " |" for r in cells]
    else:
        widths = [max(len(x) for x in col) for col in zip(head, *cells, strict=False)]
        fmt = "  ".join(f"{{:<{w}}}" if i < left else f"{{:>{w}}}" for i, w in enumerate(widths))
        lines = [fmt.format(*head), fmt.format(*["-" * w for w in widths])]
        lines += [fmt.format(*r) for r in cells]
        lines = [line.rstrip() for line in lines]
    if notes:
        lines.append("")
        lines += [("- " if markdown else "note: ") + n for n in notes]
    return "\n".join(lines)
