"""Files: atomic writes and output checks, media (PNG, video), checkpoints, the run folder's file names, `.ply`
splats and the splat viewer's copy. The bottom layer: it imports nothing else of lucid_app, and every file the
product writes goes through it (or through a library's own saver, for model weights)."""
