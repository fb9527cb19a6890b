"""Acquire: Helioviewer JPEG 2000 downloads and flare catalogs (HEK, flare lists, NOAA reports)."""
