"""Cell-level karyotyping: a cell's chromosome crops → its karyotype, by constrained crop-to-slot assignment."""

from genediag.karyotyping.assign import (Assignment, CellCall, Hypothesis, assign, counts_to_iscn,
                                         is_numerically_abnormal, karyotype_cell, make_hypotheses, parse_iscn)

__all__ = ["Assignment", "CellCall", "Hypothesis", "assign", "counts_to_iscn", "is_numerically_abnormal",
           "karyotype_cell", "make_hypotheses", "parse_iscn"]
