"""Which forecasts to explain: a prediction table and a small, safe selection language.

``fdflare explain --predictions CSV --where EXPR`` picks rows of a prediction table:

* the study's format ``timestamp,flare_prob,target`` (``fdflare predict``), or
* the joined table ``label,flare_prob,target,goes_class,fl_lon,fl_lat,fl_start``
  (``fdflare predict --table``), which adds the location of the window's largest flare.

``EXPR`` combines these names with ``and``, ``or``, ``not`` and parentheses (``not``
binds tightest, then ``and``, then ``or``):

==============  ===============================================================
``tp``          a flare (target 1) forecast: ``flare_prob >= threshold``
``fp``          no flare (target 0), forecast
``tn``          no flare, not forecast
``fn``          a flare, not forecast
``positive``    target 1
``negative``    target 0
``near_limb``   the flare's ``|fl_lon| > 70`` (rounded to 0.01 deg, as ``fdflare spatial``)
``central``     the flare's ``|fl_lon| <= 70``; rows without a location are neither
==============  ===============================================================

The expression is parsed here, by a recursive-descent parser over those tokens; nothing is
ever evaluated as Python. The run over the selected rows (loading the model and images,
attributing, writing ``explanations.csv``) is :func:`fdflare.analysis.explain_run.explain`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fdflare.core.disk import NEAR_LIMB_DEG as LIMB_DEG
from fdflare.core.errors import UsageError

__all__ = [
    "NAMES",
    "Selection",
    "parse_where",
    "read_prediction_table",
    "select_rows",
]

#: Names of the selection language and what each needs from the table.
NAMES = {
    "tp": "target",
    "fp": "target",
    "tn": "target",
    "fn": "target",
    "positive": "target",
    "negative": "target",
    "near_limb": "location",
    "central": "location",
}
KEYWORDS = ("and", "or", "not")

_TOKEN = re.compile(r"\s*(?:([A-Za-z_][A-Za-z0-9_]*)|(\()|(\)))")

# An expression tree: ("name", n) | ("not", e) | ("and", a, b) | ("or", a, b)
Node = tuple


def _tokens(text: str) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None:
            start = len(text) - len(text[pos:].lstrip())
            raise UsageError(
                f"--where {text!r}: unexpected {text[start]!r} at character {start + 1}; "
                "use names, and, or, not and parentheses"
            )
        tok = (m.group(1) or m.group(2) or m.group(3) or "").lower()
        out.append((tok, m.start(m.lastindex or 0) + 1))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def fail(self, what: str) -> UsageError:
        return UsageError(f"--where {self.text!r}: {what}")

    def peek(self) -> str | None:
        return self.toks[self.i][0] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, int]:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def parse(self) -> Node:
        if not self.toks:
            raise self.fail(f"empty expression; combine {', '.join(NAMES)}")
        node = self.disjunction()
        if self.i < len(self.toks):
            tok, at = self.toks[self.i]
            raise self.fail(f"unexpected {tok!r} at character {at}")
        return node

    def disjunction(self) -> Node:
        node = self.conjunction()
        while self.peek() == "or":
            self.take()
            node = ("or", node, self.conjunction())
        return node

    def conjunction(self) -> Node:
        node = self.negation()
        while self.peek() == "and":
            self.take()
            node = ("and", node, self.negation())
        return node

    def negation(self) -> Node:
        if self.peek() == "not":
            self.take()
            return ("not", self.negation())
        return self.atom()

    def atom(self) -> Node:
        if self.peek() is None:
            raise self.fail("the expression ends too early")
        tok, at = self.take()
        if tok == "(":
            node = self.disjunction()
            if self.peek() != ")":
                raise self.fail(f"the parenthesis at character {at} is not closed")
            self.take()
            return node
        if tok == ")" or tok in KEYWORDS:
            raise self.fail(f"unexpected {tok!r} at character {at}")
        if tok not in NAMES:
            raise self.fail(f"unknown name {tok!r}; valid names: {', '.join(NAMES)}")
        return ("name", tok)


#: the longest --where expression (deeper nesting than it allows is refused too)
MAX_WHERE = 500


def parse_where(text: str) -> Node:
    """Parse a ``--where`` expression into a tree.

    Raises:
        UsageError: an unknown name (listing the valid ones), a stray character or
            keyword, or unbalanced parentheses, naming ``--where``.
    """
    if len(text) > MAX_WHERE:
        raise UsageError(
            f"--where is {len(text)} characters long; an expression holds at most {MAX_WHERE}"
        )
    try:
        return _Parser(text).parse()
    except RecursionError:
        raise UsageError("--where is nested too deeply (parentheses or not)") from None


def _names(node: Node) -> set[str]:
    if node[0] == "name":
        return {node[1]}
    return set().union(*(_names(child) for child in node[1:]))


def _evaluate(node: Node, masks: dict[str, np.ndarray]) -> np.ndarray:
    kind = node[0]
    if kind == "name":
        return masks[node[1]]
    if kind == "not":
        return ~_evaluate(node[1], masks)
    left, right = _evaluate(node[1], masks), _evaluate(node[2], masks)
    return (left & right) if kind == "and" else (left | right)


def read_prediction_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a prediction table: ``path``, ``flare_prob``, ``target`` (or NA), ``fl_lon``, ``fl_lat``.

    Accepts ``timestamp,flare_prob[,target]`` and the joined table (``label`` for
    ``timestamp``, with ``fl_lon``, ``fl_lat``), read by the one reader of prediction files
    (:func:`fdflare.inference.predictions.read_prediction_file`). The result's ``attrs`` say
    whether the table has targets and locations.

    Raises:
        InputError: a missing column, or a value that is not a probability in [0, 1], a 0/1
            target, a longitude in -180..180 or a latitude in -90..90, naming file, line and
            field.
    """
    from fdflare.inference.predictions import read_prediction_file

    df = read_prediction_file(
        path,
        need=("id",),
        expected="a table of `fdflare predict` (timestamp,flare_prob,target or its _joined.csv)",
    )
    n = len(df)
    has_target, has_location = df.attrs["has_target"], df.attrs["has_location"]
    out = pd.DataFrame(
        {
            "path": df[df.attrs["id_column"]].astype(str).str.strip(),
            "flare_prob": df["flare_prob"].to_numpy(dtype=float),
            "target": df["target"].to_numpy(dtype=float) if has_target else np.full(n, np.nan),
            "fl_lon": df["fl_lon"].to_numpy(dtype=float) if has_location else np.full(n, np.nan),
            "fl_lat": df["fl_lat"].to_numpy(dtype=float) if has_location else np.full(n, np.nan),
        }
    )
    out.attrs.update(path=str(path), has_target=has_target, has_location=has_location)
    return out


@dataclass
class Selection:
    """The rows a ``--where`` expression picked, and how many there were."""

    rows: pd.DataFrame
    n_table: int
    expression: str


def select_rows(table: pd.DataFrame, where: str, *, threshold: float = 0.5) -> Selection:
    """The rows of ``table`` (:func:`read_prediction_table`) that ``where`` selects, in order.

    Raises:
        UsageError: a bad expression, or one that needs targets or flare locations the
            table lacks (naming the table and what gives them).
    """
    tree = parse_where(where)
    used = _names(tree)
    source = table.attrs.get("path", "the prediction table")
    need_target = sorted(n for n in used if NAMES[n] == "target")
    if need_target and not table.attrs.get("has_target", True):
        raise UsageError(
            f"--where {where!r}: {', '.join(need_target)} need(s) a target column, and "
            f"{source} has none (predict with --labels)"
        )
    need_location = sorted(n for n in used if NAMES[n] == "location")
    if need_location and not table.attrs.get("has_location", True):
        raise UsageError(
            f"--where {where!r}: {', '.join(need_location)} need(s) the flare locations "
            f"fl_lon, fl_lat, and {source} has none (use the _joined.csv of "
            "`fdflare predict --table labels.csv`)"
        )
    target = table["target"].to_numpy(float)
    forecast = table["flare_prob"].to_numpy(float) >= threshold
    lon = np.round(table["fl_lon"].to_numpy(float), 2)
    known = np.isfinite(lon)
    flare, quiet = target == 1, target == 0
    masks = {
        "tp": flare & forecast,
        "fp": quiet & forecast,
        "tn": quiet & ~forecast,
        "fn": flare & ~forecast,
        "positive": flare,
        "negative": quiet,
        "near_limb": known & (np.abs(np.where(known, lon, 0.0)) > LIMB_DEG),
        "central": known & (np.abs(np.where(known, lon, 0.0)) <= LIMB_DEG),
    }
    try:
        keep = _evaluate(tree, masks) if len(table) else np.zeros(0, dtype=bool)
    except RecursionError:
        raise UsageError("--where is nested too deeply (parentheses or not)") from None
    return Selection(table[keep].reset_index(drop=True), len(table), where)
