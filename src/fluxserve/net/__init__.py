"""The network edge of inputs and webhooks: the SSRF guard (``guard``) and input URI parsing (``uris``)."""
