"""The app's engine (no UI): the job manager with its queue, board and runner, the executors (in-process, Ray),
task jobs, the model cache, step logs, preview grids, per-owner run folders and what a client may ask for."""
