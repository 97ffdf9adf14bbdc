"""Synthetic G-banded chromosome cohort: karyotypes, renderer, karyograms, cohort generator."""
