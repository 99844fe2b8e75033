"""Predictors: the worker-side code that turns a validated input into outputs.

Nothing here imports torch or diffusers at module level; each predictor does so in ``setup()``.
"""
