"""Reports: the study's reproduction and the end-to-end demo."""
