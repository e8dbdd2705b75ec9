"""HTTP serving: Starlette routes for Slack's requests and /healthz, run by uvicorn (no dev server)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from slack_bolt import App
from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.integrations.slack import signature_valid
from bot.observability import metrics
from bot.store.runs import RunStore

log = logging.getLogger(__name__)


DEFAULT_MAX_BODY_BYTES = 1 << 20  # Slack's payloads are a few KB; a modal submission stays well under this


def build_asgi(bolt_app: App, store: RunStore, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               redis_details: Callable[[], list[str]] | None = None) -> Starlette:
    """POST /slack/events for commands, interactivity and events; GET /healthz reports Redis (and, with
    ``redis_details``, what the start-up check found: AOF off, or that persistence could not be checked)."""

    async def slack_events(request: Request) -> Response:
        started = time.monotonic()
        body = await _read_capped(request, max_body_bytes)
        if body is None:
            # Answer before reading the rest, and close the connection so the rest is never read.
            return Response("request too large", status_code=413, headers={"connection": "close"})
        if not _signed(bolt_app, request, body):
            # Refused here, before Bolt, whose own refusal logs the whole body. Never log the body.
            log.info("refused a request without a valid Slack signature (%d bytes)", len(body))
            return Response(status_code=401)
        try:
            bolt_request = to_bolt_request(request, body)
            # Bolt's App is synchronous: dispatch in a worker thread so the event loop keeps serving.
            bolt_response = await run_in_threadpool(bolt_app.dispatch, bolt_request)
        except Exception as exc:  # a malformed payload Bolt itself chokes on: never a 500, never a traceback
            log.warning("malformed Slack request: %s", type(exc).__name__)
            return Response("bad request", status_code=400)
        if bolt_response.status >= 500:
            # Our listeners catch their own errors, so a 5xx is Bolt failing on a malformed (but signed) payload.
            log.warning("malformed Slack request: Bolt answered %s", bolt_response.status)
            return Response("bad request", status_code=400)
        metrics.observe_ack(_kind(bolt_request.body), time.monotonic() - started)
        return to_starlette_response(bolt_response)

    async def healthz(_: Request) -> Response:
        ok = await run_in_threadpool(store.ping)
        body: dict[str, Any] = {"status": "ok" if ok else "degraded", "redis": "ok" if ok else "unreachable"}
        if redis_details is not None:
            body["details"] = await run_in_threadpool(redis_details)
        return JSONResponse(body, status_code=200 if ok else 503)

    async def prometheus(_: Request) -> Response:
        # No signature: a scraper has none. It shows counts by environment, state, step and Slack method only (no
        # user, no run id, no secret); METRICS_PORT moves it to a port of its own, or turns it off (README).
        text = await run_in_threadpool(metrics.exposition)
        return Response(text, media_type=metrics.CONTENT_TYPE)

    routes = [
        Route("/slack/events", slack_events, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    if metrics.on_main_port():
        routes.append(Route("/metrics", prometheus, methods=["GET"]))
    return Starlette(routes=routes)


def _kind(body: Any) -> str:
    """What a Slack request is, for the ack-latency histogram: command, action, view, event, options or other."""
    if not isinstance(body, dict):
        return "other"
    if "command" in body:
        return "command"
    kind = str(body.get("type", ""))
    return {"block_actions": "action", "view_submission": "view", "view_closed": "view", "event_callback": "event",
            "block_suggestion": "options", "shortcut": "action", "message_action": "action"}.get(kind, "other")


async def _read_capped(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to exceed ``limit``: from Content-Length before reading any of
    it, else by counting while it streams in (a chunked body has no length)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.strip().isdigit() or int(declared) > limit):
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _signed(bolt_app: App, request: Request, body: bytes) -> bool:
    secret = bolt_app._signing_secret  # noqa: SLF001 - the one the app verifies with
    return signature_valid(secret, body, dict(request.headers))
