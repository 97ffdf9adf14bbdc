"""Cell-level karyotyping: a cell's chromosome crops → its karyotype, by constrained crop-to-slot assignment."""

from genediag.karyotyping.assign import (Assignment, CellCall, Hypothesis, assign, counts_to_iscn,
                                         is_numerically_abnormal, karyotype_cell, make_hypotheses,
                                         mean_log_likelihood, parse_iscn)
from genediag.karyotyping.calls import (DEFAULT_GROUP_PRIORS, fit_nofit_threshold, karyotype_metrics,
                                        resolve_hypotheses, standard_groups, standard_hypotheses)

__all__ = ["Assignment", "CellCall", "DEFAULT_GROUP_PRIORS", "Hypothesis", "assign", "counts_to_iscn",
           "fit_nofit_threshold", "is_numerically_abnormal", "karyotype_cell", "karyotype_metrics",
           "make_hypotheses", "mean_log_likelihood", "parse_iscn", "resolve_hypotheses", "standard_groups",
           "standard_hypotheses"]
