"""The guidance lab: measurements of what a guidance does on a prior: the pseudo-GT inspector, and the prior doctor
(:mod:`lucid_app.lab.doctor`: will ISM, SDS or SDI restore a disturbed image on this model?)."""
