"""Training a 3D object: the loop, its losses, live controls and prompt changes, periodic outputs, the end-of-run
export, events, the run-time estimate, a job's memory and time estimate with the server's limits, Ctrl-C / SIGTERM
handling and the preparation of a run (config + prior)."""
