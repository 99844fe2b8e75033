"""Gateway: models forwarded to an upstream Replicate-format provider (Replicate, CometAPI, another fluxserve)."""
