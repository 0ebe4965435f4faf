"""Reported numbers, run collection, tables, figures and the regression check.

* :mod:`.reference`  ``results/reference/pvkd_reported.csv`` and ``claims.yaml``
* :mod:`.collect`    finished runs (metrics.json) -> records in percent / GMACs per scan, seed summaries
* :mod:`.tables`     "Paper | Ours | Δ" tables, Markdown + LaTeX (booktabs)
* :mod:`.figures`    per-class IoU bars and per-distance mIoU curves (PNG + PDF)
* :mod:`.check`      tolerances and ordering claims; exit code for ``harness check``
"""
