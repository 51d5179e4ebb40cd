"""Reporting: the run report and the synthetic gallery, and the ranking and statistics they rest on.

* :mod:`lossbench.report.render` writes a run's report from :mod:`lossbench.report.run_data` and the parts in
  :mod:`lossbench.report.sections`; :mod:`lossbench.report.gallery` writes the sanity-check gallery.
* Both render the table model of :mod:`lossbench.report.model` with the templates of
  :mod:`lossbench.report.templating`; figures come from :mod:`lossbench.report.plots`.
* Ranked tables: :mod:`lossbench.report.ranking`; statistics: :mod:`lossbench.report.stats`.
"""
