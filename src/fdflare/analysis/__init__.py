"""Analysis: skill scores, spatial analytics and their figures."""
