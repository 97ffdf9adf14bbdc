"""Karyogram abnormality detection (normal vs abnormal karyograms): layout-preserving augmentation, the offline
balancing stage, the slot-counting base, Monte-Carlo-dropout confidence with referral, and the hyper-parameter
search.

The transfer models themselves live in :mod:`genediag.models.thesis_transfer` (registered as
``thesis_transfer``) so that the ``karyogram_train@``/``karyogram_evaluate@`` stages build them like any other model.
"""
