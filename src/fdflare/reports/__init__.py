"""Reports: runs that chain stages (cross-validation, the reproduction, the demo) and HTML pages."""
