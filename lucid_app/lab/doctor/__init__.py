"""The prior doctor: will ISM (SDS, SDI) restore a disturbed image on this prior, or push it away?

:mod:`~lucid_app.lab.doctor.measure` measures the restoring coefficient and the x̂₀ gains; its clean views come from a
dataset or the prior's own samples (:mod:`~lucid_app.lab.doctor.references`); :mod:`~lucid_app.lab.doctor.report`
turns a measurement into the JSON summary, a table and a plot; :func:`~lucid_app.lab.doctor.run.diagnose` runs all
three on a loaded prior (the ``doctor`` command and the app's "Check this model" panel call it).
"""
