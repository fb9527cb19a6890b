"""Prepare: JPEG 2000 headers and disk geometry, reduced-resolution decode, the array store."""
