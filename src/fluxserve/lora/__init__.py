"""LoRA weights by reference: parsing what clients pass (:mod:`.refs`) and fetching it into a local, checked
``.safetensors`` file through an on-disk LRU cache (:mod:`.fetch`)."""

from fluxserve.lora.fetch import LoraCache, LoraFile
from fluxserve.lora.refs import HubRef, LoraError, LoraRef, UrlRef, parse_lora_ref

__all__ = ["HubRef", "LoraCache", "LoraError", "LoraFile", "LoraRef", "UrlRef", "parse_lora_ref"]
