"""genediag: reproducible image models for genetic diagnostics (chromosomes, karyograms, faces)."""

__version__ = "0.1.0"
