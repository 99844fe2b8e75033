"""The ``fluxserve`` command line."""
