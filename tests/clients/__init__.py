"""Drivers for API clients that cannot share the test virtualenv (run as scripts with their own interpreter)."""
