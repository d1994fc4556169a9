"""The guidance lab: measurements of what a guidance does on a prior (the pseudo-GT inspector)."""
