"""One error tree. Each error knows its HTTP status and problem title; ``api/problems.py`` maps them."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class InvalidField:
    """One reason a request or an input was refused: the record validation produces and a 422's
    ``invalid_fields`` entry carries, unchanged, to the client."""

    type: str
    field: str
    description: str

    def to_json(self) -> dict[str, str]:
        """The wire form (``schema.InvalidFieldOut``)."""
        return asdict(self)


class FluxserveError(Exception):
    """Base of every error the API reports to clients as ``application/problem+json``."""

    status: int = 500
    title: str = "Internal server error"

    def __init__(
        self,
        detail: str,
        *,
        invalid_fields: Sequence[InvalidField] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.invalid_fields = list(invalid_fields) if invalid_fields is not None else None
        self.headers = headers


class Unauthenticated(FluxserveError):
    """No key, or a key we do not know."""

    status = 401
    title = "Unauthenticated"


class Forbidden(FluxserveError):
    """A valid key that may not do this (an operator action without an admin key)."""

    status = 403
    title = "Forbidden"


class LicenseNotAccepted(FluxserveError):
    """A model under a license the operator has not accepted (non-commercial weights); no key can change that."""

    status = 403
    title = "Model license not accepted"


class NotFound(FluxserveError):
    """A resource that does not exist or belongs to another key."""

    status = 404
    title = "Not found"


class Conflict(FluxserveError):
    """The resource already exists (a deployment name the owner already uses)."""

    status = 409
    title = "Conflict"


class InvalidRequest(FluxserveError):
    """The request body or a parameter is malformed (bad JSON, missing ``input``, bad cursor)."""

    status = 422
    title = "Invalid request"


class InputValidationFailed(FluxserveError):
    """The prediction ``input`` does not match the model's schema."""

    status = 422
    title = "Input validation failed"

    @classmethod
    def of(cls, fields: Sequence[InvalidField]) -> InputValidationFailed:
        """The 422 for ``fields``; the detail lists each on a line of its own (see :func:`detail_line`)."""
        return cls("".join(f"{detail_line(f)}\n" for f in fields), invalid_fields=fields)


def detail_line(f: InvalidField) -> str:
    """``f`` as a line of a 422's ``detail``, naming its field once.

    Descriptions usually begin with the input's own name (``prompt is required``, ``image: must be an http(s)
    URL …``, as a prediction's error names it); that name becomes the field's full path instead of being
    repeated after it: ``- input.prompt is required``, ``- input.image: must be …``. A description that names
    the field elsewhere (``Additional property foo is not allowed``) stands alone; any other follows the field:
    ``- input.steps: …``.
    """
    name = f.field.rsplit(".", 1)[-1]
    if f.description.startswith((f"{name} ", f"{name}:")):
        return f"- {f.field}{f.description[len(name) :]}"
    if re.search(rf"(?<![\w.\[]){re.escape(name)}(?![\w\[])", f.description):
        return f"- {f.description}"
    return f"- {f.field}: {f.description}"


class InvalidVersion(FluxserveError):
    """``version`` names no version we serve (Replicate answers this with 422)."""

    status = 422
    title = "Invalid version or not permitted"


class ServiceUnavailable(FluxserveError):
    """A dependency (the database) is down; retry later."""

    status = 503
    title = "Service unavailable"


class TooManyRequests(FluxserveError):
    """Over a rate limit or a model's queue cap; carries ``Retry-After``."""

    status = 429
    title = "Too many requests"


class PayloadTooLarge(FluxserveError):
    """An upload over ``max_upload_bytes``."""

    status = 413
    title = "Payload too large"
