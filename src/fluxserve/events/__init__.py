"""Events: the in-process hub (``hub``) and its bridge across processes over PostgreSQL LISTEN/NOTIFY
(``pgnotify``). Payloads stay tiny; readers re-read the row."""
