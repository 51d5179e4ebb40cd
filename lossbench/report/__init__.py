"""Reporting: ranked tables (:mod:`lossbench.report.ranking`) and statistics (:mod:`lossbench.report.stats`)."""
