"""View models of the cleaning dashboard and of the export's HTML report: every number formatted,
every bar and chart coordinate computed and every link built here, so the templates (shared by
the two) only place what they are given.

- :mod:`~app.pipeline.views.common`: the data the sections are drawn from, and where their numbers
  link to;
- :mod:`~app.pipeline.views.progress`: what the loop did: the funnel, the rounds, the estimates;
- :mod:`~app.pipeline.views.results`: what came out: class sizes, dropped classes, training
  curves, the final model;
- :mod:`~app.pipeline.views.page`: the dashboard (and its live part) and the report, assembled.

The report is drawn from report.json's dict (:func:`~app.pipeline.views.common.data_from_report`),
the dashboard from the read functions of :mod:`app.pipeline.reports`; both go through
:func:`~app.pipeline.views.page.sections`. Nothing here reads the clock: the same data gives the
same view.
"""
