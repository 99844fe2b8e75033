"""fluxserve: self-hosted FLUX image predictions behind the Replicate HTTP API."""

__version__ = "0.1.0"
