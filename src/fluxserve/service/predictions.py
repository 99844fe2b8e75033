"""PredictionService: create, get, list, cancel and wait. The API's only way to the store."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import orjson

from fluxserve.catalog.fields import validate_input
from fluxserve.catalog.registry import ModelSpec, Registry
from fluxserve.errors import (
    Forbidden,
    InputValidationFailed,
    InvalidField,
    InvalidVersion,
    LicenseNotAccepted,
    NotFound,
    ServiceUnavailable,
    TooManyRequests,
)
from fluxserve.events.hub import CANCEL, OPERATOR, PREDICTION, WORK, EventHub, Subscription
from fluxserve.lifecycle import LOADING_LOG, NO_WORKER_LOG, Status
from fluxserve.modelstate import Availability, summarize
from fluxserve.net.uris import InputURIError, OwnFile, check_uri_syntax, decode_data_uri, own_reference
from fluxserve.predictors.images import sniff_image
from fluxserve.refs import parse_model_ref
from fluxserve.schema import PredictionRequest, utcnow
from fluxserve.service.params import Page, check_webhook, deadline_from_header, decode_cursor, encode_cursor
from fluxserve.store.rows import KeyRow, PredictionRow, UsageRow, WorkerRow, db_text
from fluxserve.store.store import Store

PAGE_SIZE = 100
#: A list page stops early (with a next cursor) once its predictions' data reaches this many bytes.
MAX_PAGE_BYTES = 8 * 1024 * 1024
LIVE_WORKERS_CACHE_SECONDS = 1.0
QUEUE_FULL_RETRY_SECONDS = 5
# Even when no event arrives, a waiter re-reads this often (events can be lost while a database restarts).
WAIT_RECHECK_SECONDS = 5.0
log = logging.getLogger("fluxserve.service")
# How long a cancel request waits for the worker to stop, so the response usually reads "canceled".
CANCEL_SETTLE_SECONDS = 1.0
IGNORED_INPUT_LOG = "Ignored unknown input: {keys}\n"


def _within_page_bytes(rows: list[PredictionRow]) -> list[PredictionRow]:
    """The leading rows whose input, output and logs fit in :data:`MAX_PAGE_BYTES` (at least one): a page of
    a hundred predictions with megabyte prompts must not become a response of hundreds of megabytes."""
    total = 0
    for i, row in enumerate(rows):
        total += len(orjson.dumps([row.input, row.output])) + len(row.logs or "") + 1024
        if total > MAX_PAGE_BYTES and i > 0:
            return rows[:i]
    return rows


def new_prediction_id() -> str:
    """26 lower-case base32 characters from 128 random bits (Cog's recipe)."""
    return base64.b32encode(uuid.uuid4().bytes).decode().lower().rstrip("=")


class PredictionService:
    """Business rules of predictions; HTTP-free."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        hub: EventHub,
        *,
        liveness_seconds: float = 30.0,
        max_input_bytes: int = 50 * 1024 * 1024,
        on_created: Callable[[str], None] | None = None,
        queue_cap: int = 0,
        strict_inputs: bool = False,
        max_text_chars: int | None = None,
    ) -> None:
        self.store = store
        self.max_text_chars = max_text_chars
        self.strict_inputs = strict_inputs
        self.queue_cap = queue_cap
        self.on_created = on_created
        self.max_input_bytes = max_input_bytes
        self.registry = registry
        self.hub = hub
        self.liveness_seconds = liveness_seconds
        self._workers: tuple[float, list[WorkerRow]] = (-1.0, [])

    async def live_workers(self) -> list[WorkerRow]:
        """The live workers as they last reported (cached for a second: create calls this)."""
        now = asyncio.get_running_loop().time()
        if now - self._workers[0] > LIVE_WORKERS_CACHE_SECONDS:
            live = await self.store.workers.live(utcnow() - timedelta(seconds=self.liveness_seconds))
            self._workers = (now, live)
        return self._workers[1]

    async def availability(self, model: str) -> Availability:
        """Whether ``model`` can take predictions: its state on every live worker."""
        return summarize(model, await self.live_workers())

    async def request_model_action(self, key: KeyRow, spec: ModelSpec, action: str) -> list[str]:
        """Ask every live worker serving ``spec`` to ``load`` or ``unload`` it (admin keys only); their ids."""
        if not key.admin:
            raise Forbidden("Loading and unloading models needs an admin key (fluxserve keys create --admin).")
        workers = await self.store.workers.request(
            spec.ref, action, utcnow() - timedelta(seconds=self.liveness_seconds)
        )
        self.hub.publish(WORK, OPERATOR)
        # The next read shows the change the workers report, not a second-old cache.
        self._workers = (-1.0, [])
        return workers

    # --- model resolution ----------------------------------------------------------------------------

    def model(self, owner: str, name: str) -> ModelSpec:
        """The served model ``owner/name`` or :class:`NotFound`."""
        spec = self.registry.get(f"{owner}/{name}")
        if spec is None:
            known = ", ".join(s.ref for s in self.registry)
            raise NotFound(f"Model {owner}/{name} is not served here. Models served: {known}.")
        return spec

    def resolve_version(self, ref: str) -> tuple[ModelSpec, str]:
        """Resolve ``version`` of ``POST /predictions``: a version id, ``owner/name`` or ``owner/name:id``.

        Returns the model and the version string to record ("hidden" for ``owner/name``).
        """
        parsed = parse_model_ref(ref)
        if parsed is None:
            spec = self.registry.by_version(ref)
            if spec is None:
                raise InvalidVersion(
                    f"The specified version {ref!r} does not exist (or perhaps you don't have permission to use it?)"
                )
            return spec, ref
        spec = self.registry.get(f"{parsed.owner}/{parsed.name}")
        if spec is None:
            raise InvalidVersion(f"Model {parsed.owner}/{parsed.name} is not served here.")
        version = parsed.version
        if version is None:
            return spec, "hidden"
        if version not in spec.version_ids:
            raise InvalidVersion(
                f"Version {version} of {spec.ref} does not exist; the current version is {spec.version_id}."
            )
        return spec, version

    # --- create ---------------------------------------------------------------------------------------

    async def create(
        self,
        key: KeyRow,
        spec: ModelSpec,
        version: str,
        request: PredictionRequest,
        *,
        source: str = "api",
        wait: float | None = None,
        api_base: str | None = None,
        cancel_after: str | None = None,
        deployment: str | None = None,
        note: str | None = None,
    ) -> PredictionRow:
        """Validate the input, store the prediction as ``starting`` and wake the workers.

        With ``wait``, hold on up to that many seconds for a terminal state (``Prefer: wait``) and
        return the prediction as it is then. ``note`` starts its logs (a line ending in a newline).
        """
        if spec.refused:
            raise LicenseNotAccepted(spec.refused)
        if spec.unavailable:
            raise ServiceUnavailable(spec.unavailable, headers={"Retry-After": "60"})
        validation = validate_input(spec.inputs, request.input, strict=self.strict_inputs, max_text=self.max_text_chars)
        if not validation.errors and spec.input_check is not None:
            validation.errors.extend(spec.input_check(validation.values))
        if validation.errors:
            raise InputValidationFailed.of(validation.errors)
        file_errors = await self._check_file_inputs(spec, key, validation.values)
        if file_errors:
            raise InputValidationFailed.of(file_errors)
        check_webhook(request.webhook)
        if self.queue_cap and await self.store.queued_count(spec.ref) >= self.queue_cap:
            # Answer now rather than queue forever; clients retry after Retry-After.
            raise TooManyRequests(
                f"{spec.ref} already has {self.queue_cap} predictions waiting; try again shortly.",
                headers={"Retry-After": str(QUEUE_FULL_RETRY_SECONDS)},
            )
        logs, stored_input = db_text(note) or "", request.input
        if validation.ignored:
            # Dropped, not refused (as Replicate and Cog do), and said where the user looks.
            # Escaped as the store escapes text, so the create response reads as every later GET does.
            logs = db_text(IGNORED_INPUT_LOG.format(keys=", ".join(validation.ignored))) or ""
            stored_input = {k: v for k, v in request.input.items() if k not in validation.ignored}
            log.info("%s: ignored unknown input %s", spec.ref, ", ".join(validation.ignored))
        available = await self.availability(spec.ref)
        if available.state == "failed":
            # Every worker serving it failed to load it: queuing would only fail later, so say why now.
            raise ServiceUnavailable(
                f"Model {spec.ref} could not be loaded on any worker: {available.error}",
                headers={"Retry-After": "60"},
            )
        if available.state == "no_worker":
            # Queued, not failed: a worker may start later. Say so where the user looks.
            logs += NO_WORKER_LOG.format(model=spec.ref)
            log.warning("prediction queued for %s, which no live worker serves", spec.ref)
        elif available.state == "loading":
            logs += LOADING_LOG.format(model=spec.ref)
        created_at = utcnow()
        deadline = deadline_from_header(cancel_after, created_at)
        row = PredictionRow(
            id=new_prediction_id(),
            logs=logs,
            deadline=deadline,
            key_id=key.id,
            model=spec.ref,
            version=version,
            input=stored_input,
            status=Status.STARTING,
            created_at=created_at,
            source=source,
            webhook=request.webhook,
            webhook_events_filter=list(request.webhook_events_filter) if request.webhook_events_filter else None,
            api_base=api_base,
            deployment=deployment,
        )
        if wait is None:
            await self._insert(row, spec)
            return row
        # Subscribe before the row exists, so no change can slip between insert and wait.
        with self.hub.subscribe(PREDICTION, row.id) as changes:
            await self._insert(row, spec)
            return await self._wait(row, changes, wait)

    async def _insert(self, row: PredictionRow, spec: ModelSpec) -> None:
        await self.store.insert_prediction(row)
        if self.on_created is not None:
            self.on_created(spec.ref)
        self.hub.publish(WORK, spec.ref)

    async def _check_file_inputs(self, spec: ModelSpec, key: KeyRow, values: dict[str, Any]) -> list[InvalidField]:
        """What can be checked about file inputs without fetching anything (the rest fails the prediction)."""
        errors: list[InvalidField] = []
        for field in spec.inputs:
            value = values.get(field.name)
            if field.type not in ("uri", "uri_array") or value is None:
                continue
            items = value if isinstance(value, list) else [value]
            for i, uri in enumerate(items):
                name = f"{field.name}[{i}]" if isinstance(value, list) else field.name
                try:
                    check_uri_syntax(uri, name)
                    ref = own_reference(uri)
                    if (
                        uri.startswith("data:")
                        and sniff_image(decode_data_uri(uri, name, self.max_input_bytes)[1]) is None
                    ):
                        raise InputURIError(f"{name}: the data URI does not hold a PNG, JPEG, WEBP or GIF image")
                    elif isinstance(ref, OwnFile) and not await self.store.get_file(ref.file_id, key.id, now=utcnow()):
                        raise InputURIError(f"{name}: file {ref.file_id} does not exist, has expired or is not yours")
                except InputURIError as exc:
                    errors.append(InvalidField("invalid_file", f"input.{name}", str(exc)))
        return errors

    # --- read -----------------------------------------------------------------------------------------

    async def get(self, key: KeyRow, prediction_id: str) -> PredictionRow:
        """The key's prediction, or :class:`NotFound` (also for another key's prediction)."""
        row = await self.store.get_prediction(prediction_id, key.id)
        if row is None:
            raise NotFound(f"Prediction {prediction_id} not found.")
        return row

    async def find(self, prediction_id: str) -> PredictionRow | None:
        """The prediction ``prediction_id`` of any key, or None: for capability URLs only (stream, web page)."""
        return await self.store.get_prediction(prediction_id)

    async def model_counts(self, model: str) -> tuple[int, int]:
        """(queued, all-time) predictions of ``model``."""
        return await self.store.queued_count(model), await self.store.count_predictions(model)

    async def webhook_secret(self, key: KeyRow, candidate: str) -> str:
        """The key's webhook signing secret (``candidate`` becomes it on first use)."""
        return await self.store.webhook_secret(key.id, candidate)

    async def list(
        self,
        key: KeyRow,
        *,
        cursor: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        source: str | None = None,
    ) -> Page:
        """A page of the key's predictions (of one ``source``, ``api`` or ``web``, if given), newest first,
        100 a page."""
        before = after = None
        if cursor:
            direction, ts, pid = decode_cursor(cursor)
            if direction == "n":
                before = (ts, pid)
            else:
                after = (ts, pid)
        rows = await self.store.list_predictions(
            key.id,
            limit=PAGE_SIZE + 1,
            before=before,
            after=after,
            created_after=created_after,
            created_before=created_before,
            source=source,
        )
        more = len(rows) > PAGE_SIZE
        if after is not None:
            # Walking back towards newer rows: the extra row sits at the new (top) end.
            rows = rows[1:] if more else rows
            kept = len(_within_page_bytes(list(reversed(rows))))  # counted from the cursor outward
            more, rows = more or kept < len(rows), rows[len(rows) - kept :]
            next_cursor = encode_cursor("n", rows[-1]) if rows else None
            previous_cursor = encode_cursor("p", rows[0]) if more and rows else None
        else:
            rows = rows[:PAGE_SIZE]
            kept = len(_within_page_bytes(rows))
            more, rows = more or kept < len(rows), rows[:kept]
            next_cursor = encode_cursor("n", rows[-1]) if more else None
            previous_cursor = encode_cursor("p", rows[0]) if before is not None and rows else None
        return Page(rows, next_cursor, previous_cursor)

    async def usage(
        self, key: KeyRow, *, created_after: datetime | None = None, created_before: datetime | None = None
    ) -> UsageRow:
        """What the key used among the predictions created in the window (all time by default)."""
        usage = await self.store.usage(key.id, created_after=created_after, created_before=created_before)
        return usage.get(key.id, UsageRow())

    # --- cancel and wait ----------------------------------------------------------------------------

    async def cancel(self, key: KeyRow, prediction_id: str) -> PredictionRow:
        """Cancel the prediction; a terminal one is returned unchanged.

        A running prediction is given up to a second to stop, so the answer usually reads
        ``canceled`` already.
        """
        with self.hub.subscribe(PREDICTION, prediction_id) as changes:
            row = await self.store.request_cancel(prediction_id, key.id)
            if row is None:
                raise NotFound(f"Prediction {prediction_id} not found.")
            self.hub.publish(PREDICTION, row.id)
            changes.take()
            if row.status == Status.PROCESSING:
                self.hub.publish(CANCEL, row.id)
                row = await self._wait(row, changes, CANCEL_SETTLE_SECONDS)
            return row

    async def wait_for(self, row: PredictionRow, seconds: float) -> PredictionRow:
        """The prediction once it is terminal, or as it is after ``seconds``."""
        with self.hub.subscribe(PREDICTION, row.id) as changes:
            fresh = await self.store.get_prediction(row.id)  # after subscribing: no change slips between
            return await self._wait(fresh or row, changes, seconds)

    async def _wait(self, row: PredictionRow, changes: Subscription, seconds: float) -> PredictionRow:
        """Wait up to ``seconds`` for a terminal state; ``row`` is current as of the subscription.

        Event-driven: each publication either carries the new row (same process) or makes us
        re-read it.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not row.status.is_terminal:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return row
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changes.event.wait(), min(remaining, WAIT_RECHECK_SECONDS))
            fresh = changes.take()
            if not isinstance(fresh, PredictionRow):
                fresh = await self.store.get_prediction(row.id)
            if fresh is None:
                return row
            row = fresh
        return row
