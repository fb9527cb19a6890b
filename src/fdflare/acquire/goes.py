"""GOES X-ray flare classes: parsing to peak flux and back, vectorised.

A class such as ``M1.3`` is a letter (A, B, C, M, X: 1e-8 .. 1e-4 W/m^2) times a number;
classes compare by peak flux, so ``X10`` > ``X9.3`` (a string sort gets this wrong).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from fdflare.core.errors import InputError
from fdflare.core.recipe import CLASS_PATTERN, LETTER_FLUX

__all__ = [
    "CLASS_PATTERN",
    "LETTER_FLUX",
    "class_flux",
    "flux_letter",
    "format_goes_class",
    "normalise_class",
]


def class_flux(
    classes: pd.Series | np.ndarray | list[str],
    *,
    path: str | os.PathLike[str] | None = None,
    field: str = "goes_class",
    first_line: int = 2,
) -> np.ndarray:
    """Return the peak flux (W/m^2) of each GOES class string.

    Args:
        classes: class strings such as ``"M1.3"`` or ``"X10"``.
        path: file the classes came from, for error messages.
        field: column name, for error messages.
        first_line: file line number of the first element (header is line 1).

    Raises:
        InputError: naming the file, line and field of the first malformed class
            (``Q1.0``, ``M``, empty and the like).
    """
    s = pd.Series(classes, dtype="object").astype("string")
    parts = s.str.extract(CLASS_PATTERN)
    bad = parts[1].isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        value = s.iloc[i]
        shown = "empty" if value is pd.NA or str(value).strip() == "" else repr(str(value))
        raise InputError(
            f"malformed GOES class {shown} (expected a letter A, B, C, M or X and a number, "
            f"e.g. M1.3); {int(bad.sum())} malformed value(s) in all",
            path=path,
            line=first_line + i,
            field=field,
        )
    letters = parts[0].str.upper().map(LETTER_FLUX).to_numpy(dtype=float)
    return letters * parts[1].astype(float).to_numpy()


def normalise_class(classes: pd.Series) -> pd.Series:
    """Upper-case letters and strip spaces (``" m1.3"`` -> ``"M1.3"``), keeping the number as written."""
    s = classes.astype("string").str.strip().str.replace(r"\s+", "", regex=True)
    return s.str[0].str.upper() + s.str[1:]


def flux_letter(flux: np.ndarray) -> np.ndarray:
    """Return the class letter of each flux (``""`` for NaN or below A)."""
    flux = np.asarray(flux, dtype=float)
    edges = np.array([1e-8, 1e-7, 1e-6, 1e-5, 1e-4]) * (1 - 1e-9)
    idx = np.searchsorted(edges, np.nan_to_num(flux, nan=0.0), side="right")
    letters = np.array(["", "A", "B", "C", "M", "X"])
    return letters[idx]


def format_goes_class(flux: np.ndarray) -> np.ndarray:
    """Return GOES class strings with one decimal (``M1.3``, ``X12.0``) for peak fluxes."""
    flux = np.asarray(flux, dtype=float)
    letters = np.array(["A", "B", "C", "M", "X"])
    base = np.array([LETTER_FLUX[k] for k in letters])
    idx = np.clip(np.floor(np.log10(flux / 1e-8) + 1e-12).astype(int), 0, 4)
    mant = np.round(flux / base[idx], 1)
    up = (mant >= 10.0) & (idx < 4)  # 9.96 rounds to 10.0: next letter
    idx = np.where(up, idx + 1, idx)
    mant = np.where(up, 1.0, mant)
    return np.char.add(letters[idx], np.char.mod("%.1f", mant)).astype(object)
