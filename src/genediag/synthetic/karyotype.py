"""Karyotypes as band sequences, and the structural edits that make abnormal chromosomes.

A chromosome is a list of :class:`Segment` (pter→qter), each a piece of a real hg38 band of some
source chromosome. Edits cut a band sequence at a breakpoint, reverse a piece (inversion) or join
pieces of two chromosomes (translocation). A breakpoint named by a band ("p14") is placed at the
midpoint of that band; a band name covers all of its sub-bands (p14 = p14.1 ∪ p14.2 ∪ p14.3).

Breakpoints used by the cohort (hg38 coordinates):

* ``del(5)(p14)``   5p14.1–p14.3 = 18.4–28.9 Mb → break at 23.65 Mb, 5pter→break deleted
* ``del(4)(p15.2)`` 4p15.2 = 21.3–27.7 Mb → break at 24.5 Mb (13 % of chr4): a Wolf–Hirschhorn deletion
  visible in a routine karyotype. The minimal WHS deletion del(4)(p16) (break at 5.65 Mb, 3 % of chr4,
  about one pixel of a 64-px crop) is submicroscopic in practice too (FISH/microarray find it); our
  binary del4p-vs-4 model scored AUC 0.46 on it.
* ``del(18)(p11)``  written p11 as in ISCN practice for 18p- ; the break is placed in **p11.2**
  (hg38 splits 18p11 into p11.21..p11.32; we take the midpoint of p11.21–p11.23 = 7.2–15.4 Mb →
  11.3 Mb), so most of 18p is lost but the centromere (p11.1) stays
* ``del(1)(p36.1)`` 1p36.11–p36.13 = 15.9–27.6 Mb → break at 21.75 Mb
* ``t(9;22)(q34;q11.2)`` 9q34 = 127.5–138.39 Mb → 132.95 Mb; 22q11.2 = 17.4–25.5 Mb → 21.45 Mb
* ``inv(9)(p12q13)`` 9p12 = 39.0–40.0 Mb → 39.5 Mb; 9q13 = 61.5–65.0 Mb → 63.25 Mb
* ``i(X)(q10)``     cut at the p/q boundary (start of Xq11.1, 61.0 Mb); Xq mirrored about it
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

from genediag.data.cytobands import CHROMOSOMES, load_cytobands


class Segment(NamedTuple):
    """A piece of a band: [start, end) in bp of the source chromosome, its stain and band name."""

    start: int
    end: int
    stain: str
    name: str
    chrom: str

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Chromosome:
    """One chromosome of a cell: the crop label, its normal counterpart and its band sequence."""

    label: str
    origin: str
    segments: tuple[Segment, ...]

    @property
    def length_bp(self) -> int:
        return segments_length(self.segments)

    @property
    def centromere_bp(self) -> float:
        return segments_centromere(self.segments)

    @property
    def is_abnormal(self) -> bool:
        return self.label != self.origin


@dataclass(frozen=True)
class Karyotype:
    """The chromosomes of one cell and its ISCN string."""

    iscn: str
    sex: str  # sex-chromosome complement as written in the ISCN string: "XX", "XY", "X", "XXY", "XXX", "XYY"
    abnormality: str | None
    chromosomes: tuple[Chromosome, ...] = field(repr=False)

    @property
    def labels(self) -> list[str]:
        return [c.label for c in self.chromosomes]

    @property
    def is_abnormal(self) -> bool:
        return self.abnormality is not None


# --------------------------------------------------------------------------------------------
# Band sequences and edits
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _bands(chrom: str) -> tuple[Segment, ...]:
    df = load_cytobands()
    sub = df[df["chrom"] == chrom]
    if sub.empty:
        raise ValueError(f"unknown chromosome {chrom!r}; expected one of {CHROMOSOMES}")
    return tuple(
        Segment(int(r.start), int(r.end), str(r.stain), str(r.name), chrom) for r in sub.itertuples(index=False)
    )


def band_sequence(chrom: str) -> list[Segment]:
    """The normal band segments of ``chrom`` from pter to qter."""
    return list(_bands(str(chrom)))


def segments_length(segments) -> int:
    return int(sum(s.end - s.start for s in segments))


def segments_centromere(segments) -> float:
    """Centromere position (bp from the start of the sequence): midpoint of the first run of acen."""
    pos = 0.0
    lo = hi = None
    for s in segments:
        n = s.end - s.start
        if s.stain == "acen":
            if lo is None:
                lo = pos
            hi = pos + n
        elif lo is not None:
            break
        pos += n
    if lo is None:
        raise ValueError("segment sequence has no centromere (acen band)")
    return (lo + hi) / 2.0


_BAND_RE = re.compile(r"^([pq])(\d+(?:\.\d+)?)$")


def _band_digits(name: str) -> tuple[str, str]:
    m = _BAND_RE.match(name)
    if not m:
        raise ValueError(f"not a band name: {name!r} (expected e.g. 'p14', 'q11.2', 'p36.1')")
    return m.group(1), m.group(2).replace(".", "")


def band_span(chrom: str, band: str) -> tuple[int, int]:
    """[start, end) in bp of ``band`` including all its sub-bands (p14 → p14.1..p14.3)."""
    arm, digits = _band_digits(band)
    hits = []
    for s in _bands(str(chrom)):
        a, d = _band_digits(s.name)
        if a == arm and d.startswith(digits):
            hits.append(s)
    if not hits:
        raise ValueError(f"chromosome {chrom}: no band {band!r} in the hg38 table")
    return min(s.start for s in hits), max(s.end for s in hits)


def breakpoint_bp(chrom: str, band: str) -> int:
    """The breakpoint used for a break in ``band``: the midpoint of its (union) span."""
    lo, hi = band_span(chrom, band)
    return (lo + hi) // 2


def arm_boundary_bp(chrom: str) -> int:
    """Start of the q arm (first band named q…): the p/q boundary, ISCN p10/q10."""
    for s in _bands(str(chrom)):
        if s.name.startswith("q"):
            return s.start
    raise ValueError(f"chromosome {chrom}: no q arm")  # pragma: no cover


def slice_chrom(chrom: str, start: int, end: int) -> list[Segment]:
    """The part [start, end) of a normal chromosome, pter→qter, bands clipped at the ends."""
    out = []
    for s in _bands(str(chrom)):
        lo, hi = max(s.start, start), min(s.end, end)
        if hi > lo:
            out.append(s._replace(start=lo, end=hi))
    return out


def reverse(segments) -> list[Segment]:
    """Reverse the order of a segment run (an inverted piece; single-stain pieces look the same)."""
    return list(reversed(list(segments)))


def terminal_deletion(chrom: str, band: str) -> list[Segment]:
    """del(chrom)(band): break at the band midpoint and lose the distal (telomeric) part."""
    bp = breakpoint_bp(chrom, band)
    length = segments_length(_bands(chrom))
    if band.startswith("p"):
        return slice_chrom(chrom, bp, length)
    return slice_chrom(chrom, 0, bp)


def inversion(chrom: str, band1: str, band2: str) -> list[Segment]:
    """inv(chrom)(band1band2): the piece between the two breakpoints is reversed."""
    a, b = sorted((breakpoint_bp(chrom, band1), breakpoint_bp(chrom, band2)))
    length = segments_length(_bands(chrom))
    return slice_chrom(chrom, 0, a) + reverse(slice_chrom(chrom, a, b)) + slice_chrom(chrom, b, length)


def isochromosome_q(chrom: str) -> list[Segment]:
    """i(chrom)(q10): the q arm and its mirror image joined at the centromere (qter→cen→qter)."""
    q0 = arm_boundary_bp(chrom)
    q = slice_chrom(chrom, q0, segments_length(_bands(chrom)))
    return reverse(q) + q


def translocation_derivatives(
    chrom_a: str, band_a: str, chrom_b: str, band_b: str
) -> tuple[list[Segment], list[Segment]]:
    """t(a;b)(band_a;band_b) with q-arm breaks: der(a)=apter→a::b→bqter, der(b)=bpter→b::a→aqter."""
    ba, bb = breakpoint_bp(chrom_a, band_a), breakpoint_bp(chrom_b, band_b)
    la, lb = segments_length(_bands(chrom_a)), segments_length(_bands(chrom_b))
    der_a = slice_chrom(chrom_a, 0, ba) + slice_chrom(chrom_b, bb, lb)
    der_b = slice_chrom(chrom_b, 0, bb) + slice_chrom(chrom_a, ba, la)
    return der_a, der_b


# --------------------------------------------------------------------------------------------
# The cohort's abnormal chromosome types and karyotype abnormalities
# --------------------------------------------------------------------------------------------

#: label id (crop class name, file-name safe) -> ISCN name and normal counterpart.
ABNORMAL_TYPES: dict[str, dict[str, str]] = {
    "del5p": {"iscn": "del(5)(p14)", "origin": "5"},
    "del4p": {"iscn": "del(4)(p15.2)", "origin": "4"},
    "del18p": {"iscn": "del(18)(p11)", "origin": "18"},
    "del1p": {"iscn": "del(1)(p36.1)", "origin": "1"},
    "der9": {"iscn": "der(9)t(9;22)(q34;q11.2)", "origin": "9"},
    "der22": {"iscn": "der(22)t(9;22)(q34;q11.2)", "origin": "22"},
    "inv9": {"iscn": "inv(9)(p12q13)", "origin": "9"},
    "iXq": {"iscn": "i(X)(q10)", "origin": "X"},
}

#: every crop label: the 24 normal chromosomes then the 8 abnormal types.
ALL_LABELS: list[str] = CHROMOSOMES + list(ABNORMAL_TYPES)

#: the karyotype abnormalities, in cohort order: the 12 of the default cohort, then 47,XXX, 47,XYY and the autosomal
#: monosomies 45,-21 / 45,-22 (added at the end so that the earlier ones keep their positions).
ABNORMALITIES: list[str] = [
    "+21",
    "+18",
    "+13",
    "-X",
    "XXY",
    "del(5)(p14)",
    "del(4)(p15.2)",
    "del(18)(p11)",
    "del(1)(p36.1)",
    "t(9;22)(q34;q11.2)",
    "inv(9)(p12q13)",
    "i(X)(q10)",
    "XXX",
    "XYY",
    "-21",
    "-22",
]

#: the default cohort's abnormalities: the first 12 (the later ones are given to patients only when asked for).
DEFAULT_ABNORMALITIES: list[str] = ABNORMALITIES[:12]

#: numerical abnormalities that set the sex-chromosome complement (written out in the ISCN string, no suffix).
_SEX_COMPLEMENT: dict[str, str] = {"-X": "X", "XXY": "XXY", "XXX": "XXX", "XYY": "XYY"}

#: file/class-name safe id for each abnormality (useful as a karyotype-level class name).
ABNORMALITY_IDS: dict[str, str] = {
    "+21": "trisomy21",
    "+18": "trisomy18",
    "+13": "trisomy13",
    "-X": "monosomyX",
    "XXY": "XXY",
    "del(5)(p14)": "del5p",
    "del(4)(p15.2)": "del4p",
    "del(18)(p11)": "del18p",
    "del(1)(p36.1)": "del1p",
    "t(9;22)(q34;q11.2)": "t9_22",
    "inv(9)(p12q13)": "inv9",
    "i(X)(q10)": "iXq",
    "XXX": "XXX",
    "XYY": "XYY",
    "-21": "monosomy21",
    "-22": "monosomy22",
}

# structural abnormality -> {normal chromosome replaced: abnormal label}
_STRUCTURAL: dict[str, dict[str, str]] = {
    "del(5)(p14)": {"5": "del5p"},
    "del(4)(p15.2)": {"4": "del4p"},
    "del(18)(p11)": {"18": "del18p"},
    "del(1)(p36.1)": {"1": "del1p"},
    "t(9;22)(q34;q11.2)": {"9": "der9", "22": "der22"},
    "inv(9)(p12q13)": {"9": "inv9"},
    "i(X)(q10)": {"X": "iXq"},
}


@lru_cache(maxsize=None)
def _abnormal_segments(label: str) -> tuple[Segment, ...]:
    if label == "del5p":
        segs = terminal_deletion("5", "p14")
    elif label == "del4p":
        segs = terminal_deletion("4", "p15.2")
    elif label == "del18p":
        segs = terminal_deletion("18", "p11.2")  # ISCN p11; break placed in p11.2 (module doc)
    elif label == "del1p":
        segs = terminal_deletion("1", "p36.1")
    elif label == "der9":
        segs = translocation_derivatives("9", "q34", "22", "q11.2")[0]
    elif label == "der22":
        segs = translocation_derivatives("9", "q34", "22", "q11.2")[1]
    elif label == "inv9":
        segs = inversion("9", "p12", "q13")
    elif label == "iXq":
        segs = isochromosome_q("X")
    else:
        raise ValueError(f"unknown abnormal chromosome {label!r}; expected one of {list(ABNORMAL_TYPES)}")
    return tuple(segs)


def chromosome_segments(label: str) -> list[Segment]:
    """Band segments for any crop label: "1".."22","X","Y" or an abnormal type id."""
    if label in CHROMOSOMES:
        return band_sequence(label)
    return list(_abnormal_segments(label))


def origin_of(label: str) -> str:
    """Normal counterpart of a crop label ("der22" -> "22"; "7" -> "7")."""
    if label in CHROMOSOMES:
        return label
    if label in ABNORMAL_TYPES:
        return ABNORMAL_TYPES[label]["origin"]
    raise ValueError(f"unknown chromosome label {label!r}; expected one of {ALL_LABELS}")


def make_chromosome(label: str) -> Chromosome:
    return Chromosome(label=label, origin=origin_of(label), segments=tuple(chromosome_segments(label)))


def sex_for(abnormality: str | None, sex: str) -> str:
    """The sex chromosome complement a karyotype will have (overrides for -X, XXY, XXX, XYY, i(X)(q10))."""
    if sex not in ("XX", "XY"):
        raise ValueError(f"sex must be 'XX' or 'XY', got {sex!r}")
    if abnormality in _SEX_COMPLEMENT:
        return _SEX_COMPLEMENT[abnormality]
    if abnormality == "i(X)(q10)":
        return "XX"
    return sex


def make_karyotype(abnormality: str | None, sex: str) -> Karyotype:
    """The chromosomes of one cell with ``abnormality`` (None = normal) and its ISCN string.

    ``sex`` is "XX" or "XY"; it is overridden for "-X" (45,X), "XXY" (47,XXY), "XXX" (47,XXX), "XYY" (47,XYY)
    and "i(X)(q10)" (female only: 46,X,i(X)(q10)). An autosomal monosomy "-21" / "-22" removes one homologue and
    is written after the sex chromosomes: 45,XX,-21.
    """
    if abnormality is not None and abnormality not in ABNORMALITIES:
        raise ValueError(f"unknown abnormality {abnormality!r}; expected None or one of {ABNORMALITIES}")
    sexc = sex_for(abnormality, sex)

    labels: list[str] = []
    for c in CHROMOSOMES[:22]:
        labels += [c, c]
    labels += list(sexc)  # "XY" -> ["X","Y"], "XXY" -> ["X","X","Y"], "X" -> ["X"], "XYY" -> ["X","Y","Y"]

    if abnormality in ("+21", "+18", "+13"):
        extra = abnormality[1:]
        labels.insert(max(i for i, lab in enumerate(labels) if lab == extra) + 1, extra)
    elif abnormality in ("-21", "-22"):
        del labels[max(i for i, lab in enumerate(labels) if lab == abnormality[1:])]  # one homologue lost
    elif abnormality in _STRUCTURAL:
        for normal, abn in _STRUCTURAL[abnormality].items():
            i = max(i for i, lab in enumerate(labels) if lab == normal)  # replace one homologue
            labels[i] = abn

    n = len(labels)
    if abnormality is None or abnormality in _SEX_COMPLEMENT:
        iscn = f"{n},{sexc}"
    elif abnormality == "i(X)(q10)":
        iscn = f"{n},X,{abnormality}"
    else:
        iscn = f"{n},{sexc},{abnormality}"

    chromosomes = tuple(make_chromosome(lab) for lab in labels)
    return Karyotype(iscn=iscn, sex=sexc, abnormality=abnormality, chromosomes=chromosomes)
