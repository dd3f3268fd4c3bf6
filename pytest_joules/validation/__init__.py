"""`joules check`: can this machine's measurements be trusted, and what does a gated test cost?

The steps (steps.py) run in order within a time budget (budget.py): `doctor`; the energy counter's
update period idle and busy, and the counter against integrated power samples under a load step
(counter.py, GPU only); a short sweep of a 1B model in both hf runtimes; an unchanged record and
rerun of a few energy tests through the plugin; one 8B point if time allows. The gate estimate is
in gate.py, the Markdown report in report.py; the command itself is cli/check.py.
"""
