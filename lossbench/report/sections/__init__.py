"""The parts of the report page, one module each; every part returns :mod:`lossbench.report.model` tables.

``header`` (setup table), ``results`` (validation and test tables), ``statistics``, ``figures``, ``audit``,
``cells`` and ``definitions``; :mod:`lossbench.report.render` puts them together.
"""
