"""Metrics: the Prometheus registry of one process (``prometheus``), the HTTP timing middleware
(``middleware``) and the worker's own ``/metrics`` + ``/health`` listener (``listener``)."""
