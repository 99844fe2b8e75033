"""``python -m fluxserve``: the same as the ``fluxserve`` command."""

from fluxserve.cli.main import main

main()
