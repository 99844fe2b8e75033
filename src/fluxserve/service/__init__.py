"""The business rules, HTTP-free: the API's only way to the store.

``predictions`` (create, read, list, cancel, wait; model availability), ``files`` (the Files API's uploads),
``follow`` (following one prediction as it changes, for the stream and the web page).
"""
