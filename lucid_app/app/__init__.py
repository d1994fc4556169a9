"""The app's engine (no UI): the job manager with its queue, board and runner, one executor interface (in-process,
capped worker processes, Ray) around the side of a job where it runs, task jobs, the model cache, step logs, preview
grids, per-owner run folders, interrupted runs and what a client may ask for."""
