"""The helpers the benchmarks in ``benchmarks/`` share.

* :mod:`harness.processes`: ``fluxserve`` subprocesses: environment, free loopback port, API keys, a server waited
  for until it is ready, an asyncio worker whose output lines are kept, stopping them (process group, SIGTERM,
  then SIGKILL);
* :mod:`harness.cpu`: CPU seconds of processes and of the whole machine from ``/proc`` (Linux), waiting for a
  quiet machine;
* :mod:`harness.postgres`: ``psql`` on a loopback server, scratch databases created and dropped;
* :mod:`harness.stats`: percentiles (nearest rank, linear), median of what is known, PSNR;
* :mod:`harness.report`: number formatting, aligned text and markdown tables, JSON output;
* :mod:`harness.asgi_entry`: fluxserve's ASGI app as an import string for other HTTP servers (imported only by
  the server processes).

Each benchmark is run as a script (``python benchmarks/load.py``), so this package is imported as the top-level
``harness``. A script puts its own folder on ``sys.path`` before it imports the package: run as a script that
folder is ``sys.path[0]`` already, but a test that loads a script by its path needs it. Nothing here but
:mod:`harness.asgi_entry` imports fluxserve at import time, and nothing imports torch or numpy at import time.
"""

from __future__ import annotations


class SetupError(Exception):
    """Something a benchmark needs could not be set up: a server, a worker, a database, a key, a tool."""
