"""``python -m fluxserve.cli``."""

from fluxserve.cli.main import main

main()
