"""The guidance lab: diagnostics of a guidance on a prior (the prior doctor: :mod:`lucid_app.lab.doctor`)."""
