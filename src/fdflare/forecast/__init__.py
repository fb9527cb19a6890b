"""Operational forecasts: the closest magnetogram to a time, an ensemble, a calibrated probability."""
