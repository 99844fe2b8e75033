"""The worker: claims predictions, runs predictors in a thread, writes results back."""
