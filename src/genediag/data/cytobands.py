"""The human hg38 G-band ideogram (cytoband) table, shipped as package data.

``hg38_cytoband.tsv`` holds one row per band (850-band resolution) for chr1..chr22, X and Y; see
``CYTOBAND_LICENSE.md`` beside it for its sources (UCSC hg38 via pyryotype; X/Y via ideogram.js).
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import pandas as pd

CHROMOSOMES: list[str] = [str(i) for i in range(1, 23)] + ["X", "Y"]
STAINS: tuple[str, ...] = ("gneg", "gpos25", "gpos50", "gpos75", "gpos100", "acen", "gvar", "stalk")

_TABLE = "hg38_cytoband.tsv"


@lru_cache(maxsize=1)
def _table() -> pd.DataFrame:
    with resources.files("genediag.data").joinpath(_TABLE).open("r", encoding="utf-8") as fh:
        df = pd.read_csv(
            fh,
            sep="\t",
            comment="#",
            header=None,
            names=["chrom", "start", "end", "name", "stain"],
            dtype={"chrom": str, "start": "int64", "end": "int64", "name": str, "stain": str},
        )
    df["chrom"] = df["chrom"].str.removeprefix("chr")
    df = df[df["chrom"].isin(CHROMOSOMES)].copy()
    bad = sorted(set(df["stain"]) - set(STAINS))
    if bad:  # pragma: no cover - guards a corrupted package data file
        raise ValueError(f"{_TABLE}: unexpected stain value(s) {bad}")
    order = {c: i for i, c in enumerate(CHROMOSOMES)}
    df["_o"] = df["chrom"].map(order)
    df = df.sort_values(["_o", "start"], kind="mergesort").drop(columns="_o").reset_index(drop=True)
    return df


def load_cytobands() -> pd.DataFrame:
    """Columns chrom ("1".."22","X","Y"), start, end (bp, 0-based half-open), name ("p36.33"), stain.

    Sorted by chromosome order then start. Returns a fresh copy each call.
    """
    return _table().copy()


def _check(chrom: str) -> str:
    chrom = str(chrom).removeprefix("chr")
    if chrom not in CHROMOSOMES:
        raise ValueError(f"unknown chromosome {chrom!r}; expected one of {CHROMOSOMES}")
    return chrom


@lru_cache(maxsize=None)
def chromosome_length(chrom: str) -> int:
    """Length in bp (end of the last band)."""
    df = _table()
    return int(df.loc[df["chrom"] == _check(chrom), "end"].max())


@lru_cache(maxsize=None)
def centromere_position(chrom: str) -> float:
    """Centromere in bp: midpoint of the span of the acen bands (p11.1 + q11/q11.1)."""
    df = _table()
    sub = df[(df["chrom"] == _check(chrom)) & (df["stain"] == "acen")]
    if sub.empty:  # pragma: no cover - every human chromosome has acen bands
        raise ValueError(f"chromosome {chrom}: no acen band in {_TABLE}")
    return float(sub["start"].min() + sub["end"].max()) / 2.0


def centromere_index(chrom: str) -> float:
    """p-arm length / total length (0.5 metacentric, < ~0.2 acrocentric)."""
    return centromere_position(chrom) / chromosome_length(chrom)
