"""The study's split of the solar disk into a central part and a near-limb ring.

A flare is *central* when ``|longitude| <= NEAR_LIMB_DEG`` and *near-limb* beyond it
(``fdflare spatial``, ``--where near_limb`` of ``fdflare explain``, the counts of
``fdflare synth``); on an image the same boundary is the circle of heliocentric angle
``NEAR_LIMB_DEG``, radius ``R sin(NEAR_LIMB_DEG)`` (the explain figure, the dashboard).
"""

from __future__ import annotations

__all__ = ["NEAR_LIMB_DEG"]

#: The study's central / near-limb boundary, degrees (of longitude, or of heliocentric angle).
NEAR_LIMB_DEG = 70.0
