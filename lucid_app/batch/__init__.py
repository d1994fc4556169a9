"""Many prompts at once: the prompts file, the Ray tasks that train them, the batch index, and the Ray connection
the app's Ray executor shares."""
