"""FakeSlack: a local HTTP stand-in for Slack's Web API, response_url and file uploads, with recording."""

from __future__ import annotations

import argparse
import copy
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from bot.devtools.slack.blockkit import MAX_MESSAGE_UPDATE_TEXT, Surface, validate_blocks, validate_view

T = TypeVar("T")

MAX_POST_TEXT = 40000
RESPONSE_URL_MAX_USES = 5
MAX_MODAL_STACK = 3
# Arguments that slack_sdk sends JSON-encoded inside form bodies.
_JSON_ARGS = {"blocks", "attachments", "view", "files", "metadata", "users", "channels_list"}


@dataclass(frozen=True)
class Call:
    """One request the fake answered: method name, arguments (token removed), response, time."""

    method: str
    args: dict[str, Any]
    response: dict[str, Any]
    at: float
    status: int = 200
    injected: bool = False

    @property
    def ok(self) -> bool:
        return self.status == 200 and bool(self.response.get("ok"))


@dataclass
class Fault:
    """A pending injected failure for one method."""

    status: int
    retry_after: int | None
    times: int
    delay_s: float
    error: str | None
    disconnect: bool


@dataclass
class FileUpload:
    """A file uploaded through files.getUploadURLExternal → upload URL → files.completeUploadExternal."""

    id: str
    name: str
    length: int | None
    content: bytes = b""
    title: str | None = None
    channel: str | None = None
    thread_ts: str | None = None
    completed: bool = False

    @property
    def bytes(self) -> bytes:  # noqa: A003 - the brief names this field `bytes`
        return self.content


@dataclass
class _ResponseTarget:
    channel: str | None
    user: str | None
    message_ts: str | None
    uses: int = 0


@dataclass
class _Trigger:
    user: str
    issued_at: float
    used: bool = False


@dataclass
class _Result:
    status: int = 200
    body: dict[str, Any] = field(default_factory=dict)
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


class _ApiError(Exception):
    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


class FakeSlack:
    """Slack's Web API on 127.0.0.1:<free port>, keeping channel/thread/view/file state and every call."""

    def __init__(self, token: str = "xoxb-devslack-token", team_id: str = "T0DEV",
                 bot_user_id: str = "U0BOT", *, bot_id: str = "B0BOT", app_id: str = "A0DEV",
                 host: str = "127.0.0.1", port: int = 0, trigger_ttl_s: float | None = 3.0,
                 latency_s: float = 0.0, app_token: str = "xapp-devslack-token") -> None:
        self.token = token
        self.latency_s = latency_s
        """Every Web API call is answered this much later, as Slack's own take tens of milliseconds (benchmarks)."""
        self.app_token = app_token
        # Socket Mode: the ws:// URL `apps.connections.open` hands out (a WebSocket server the test runs); None
        # answers as Slack does for an app without Socket Mode.
        self.socket_mode_url: str | None = None
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id
        self.trigger_ttl_s = trigger_ttl_s
        self._host = host
        self._port = port
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._calls: list[Call] = []
        self._seq = 100
        self._id_seq = 0
        self._messages: dict[str, dict[str, dict[str, Any]]] = {}
        self._ephemerals: list[dict[str, Any]] = []
        self._views: dict[str, dict[str, Any]] = {}
        self._view_users: dict[str, str] = {}
        self._modal_stacks: dict[str, list[str]] = {}
        self._homes: dict[str, dict[str, Any]] = {}
        self._files: dict[str, FileUpload] = {}
        self._faults: dict[str, list[Fault]] = {}
        self._response_targets: dict[str, _ResponseTarget] = {}
        self._triggers: dict[str, _Trigger] = {}
        self._users: dict[str, dict[str, Any]] = {}
        self._usergroups: dict[str, dict[str, Any]] = {}
        self._channels: dict[str, dict[str, Any]] = {}
        self.add_user(bot_user_id, "migrate-bot", "Migrate Bot", is_bot=True)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeSlack:
        """Bind the port and serve from a daemon thread; returns self."""
        if self._server is not None:
            return self
        fake = self

        class Handler(_Handler):
            owner = fake

        server = ThreadingHTTPServer((self._host, self._port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="devslack", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def root_url(self) -> str:
        """`http://127.0.0.1:PORT/` (the server must be started)."""
        if self._server is None:
            raise RuntimeError("FakeSlack is not started")
        port = int(self._server.server_address[1])
        return f"http://{self._host}:{port}/"

    @property
    def base_url(self) -> str:
        """The Web API base for `WebClient(base_url=...)`: `http://127.0.0.1:PORT/api/`."""
        return self.root_url + "api/"

    # ------------------------------------------------------------------ directory

    def add_user(self, user_id: str, name: str, real_name: str | None = None, *, is_bot: bool = False,
                 tz: str = "Europe/London") -> None:
        """Add (or replace) a workspace member answered by users.info."""
        with self._lock:
            self._users[user_id] = {
                "id": user_id, "team_id": self.team_id, "name": name, "deleted": False,
                "real_name": real_name or name, "tz": tz, "is_bot": is_bot, "is_admin": False,
                "profile": {"real_name": real_name or name, "display_name": name,
                            "email": None if is_bot else f"{name}@devslack.example"},
            }

    def add_usergroup(self, group_id: str, handle: str, members: list[str]) -> None:
        """Add (or replace) a user group answered by usergroups.users.list."""
        with self._lock:
            self._usergroups[group_id] = {"id": group_id, "handle": handle, "users": list(members)}

    def add_channel(self, channel_id: str, name: str, *, is_private: bool = False) -> None:
        """Add (or replace) a channel answered by conversations.info."""
        with self._lock:
            self._channels[channel_id] = {
                "id": channel_id, "name": name, "is_channel": not is_private, "is_private": is_private,
                "is_archived": False, "is_member": True, "created": 1700000000,
            }

    def user_name(self, user_id: str) -> str | None:
        """Display name of a known user, else None."""
        with self._lock:
            user = self._users.get(user_id)
            return user["name"] if user else None

    def usergroup_handle(self, group_id: str) -> str | None:
        with self._lock:
            group = self._usergroups.get(group_id)
            return group["handle"] if group else None

    def channel_name(self, channel_id: str) -> str | None:
        with self._lock:
            channel = self._channels.get(channel_id)
            return channel["name"] if channel else None

    # ------------------------------------------------------------------ recording / inspection

    @property
    def calls(self) -> list[Call]:
        """Every call so far, in arrival order (a snapshot)."""
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str) -> list[Call]:
        """The calls to one method (e.g. "chat.update"), in order, injected failures included."""
        with self._lock:
            return [c for c in self._calls if c.method == method]

    def last_call_at(self) -> float | None:
        with self._lock:
            return self._calls[-1].at if self._calls else None

    def reset_calls(self) -> None:
        """Forget recorded calls (state is kept)."""
        with self._lock:
            self._calls.clear()

    def wait_for(self, predicate: Callable[[], T], timeout: float = 5, interval: float = 0.02) -> T:
        """Poll `predicate()` until it returns something truthy and return that; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout}s; last {len(self.calls)} calls: "
                                   f"{[c.method for c in self.calls[-10:]]}")
            time.sleep(interval)

    def wait_idle(self, quiet_s: float = 0.3, timeout: float = 5, *, since: float | None = None) -> bool:
        """Wait until no call arrived for `quiet_s` (counting from `since`, default now); False on timeout."""
        start = time.time() if since is None else since
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = max(self.last_call_at() or 0.0, start)
            if time.time() - last >= quiet_s:
                return True
            time.sleep(0.02)
        return False

    def channel_messages(self, channel: str) -> list[dict[str, Any]]:
        """Current top-level messages of a channel (incl. broadcast thread replies), oldest first."""
        with self._lock:
            msgs = self._messages.get(channel, {})
            return [copy.deepcopy(m) for m in msgs.values()
                    if m.get("thread_ts") in (None, m["ts"]) or m.get("subtype") == "thread_broadcast"]

    def message(self, channel: str, ts: str) -> dict[str, Any] | None:
        """One message (top-level or reply) as it is now, or None."""
        with self._lock:
            msg = self._messages.get(channel, {}).get(ts)
            return copy.deepcopy(msg) if msg else None

    def thread(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        """The replies in a thread (the parent excluded), oldest first."""
        with self._lock:
            return [copy.deepcopy(m) for m in self._messages.get(channel, {}).values()
                    if m.get("thread_ts") == thread_ts and m["ts"] != thread_ts]

    def all_messages(self) -> list[tuple[str, dict[str, Any]]]:
        """Every current message in every channel as (channel, message), ordered by ts."""
        with self._lock:
            out = [(ch, copy.deepcopy(m)) for ch, msgs in self._messages.items() for m in msgs.values()]
        return sorted(out, key=lambda pair: _ts_key(pair[1]["ts"]))

    def ephemerals(self, user: str | None = None, channel: str | None = None) -> list[dict[str, Any]]:
        """Ephemeral messages (chat.postEphemeral, response_url, slash-command ack bodies), oldest first."""
        with self._lock:
            return [copy.deepcopy(e) for e in self._ephemerals
                    if (user is None or e["user"] == user) and (channel is None or e["channel"] == channel)]

    @property
    def views(self) -> dict[str, dict[str, Any]]:
        """Every modal opened or pushed, by view_id, in its latest state (closed ones included)."""
        with self._lock:
            return copy.deepcopy(self._views)

    def modal_stack(self, user: str) -> list[dict[str, Any]]:
        """The modals currently open for a user, bottom first."""
        with self._lock:
            return [copy.deepcopy(self._views[v]) for v in self._modal_stacks.get(user, [])]

    def top_modal(self, user: str) -> dict[str, Any] | None:
        """The modal the user currently sees, or None."""
        stack = self.modal_stack(user)
        return stack[-1] if stack else None

    def home(self, user: str) -> dict[str, Any] | None:
        """The last view published to the user's App Home, or None."""
        with self._lock:
            view = self._homes.get(user)
            return copy.deepcopy(view) if view else None

    @property
    def files(self) -> list[FileUpload]:
        """Files whose upload was completed, in completion order."""
        with self._lock:
            return [copy.copy(f) for f in self._files.values() if f.completed]

    # ------------------------------------------------------------------ ids handed to the bot via payloads

    def response_url(self, channel: str | None = None, user: str | None = None,
                     message_ts: str | None = None) -> str:
        """A fresh response_url on this server, remembering which channel/user/message it answers."""
        url_id = uuid.uuid4().hex
        with self._lock:
            self._response_targets[url_id] = _ResponseTarget(channel, user, message_ts)
        return f"{self.root_url}response/{url_id}"

    def issue_trigger_id(self, user: str) -> str:
        """A fresh single-use trigger_id for views.open/views.push on behalf of `user`."""
        with self._lock:
            self._id_seq += 1
            trigger_id = f"{int(time.time())}{self._id_seq:05d}.{self.team_id}.{uuid.uuid4().hex[:16]}"
            self._triggers[trigger_id] = _Trigger(user, time.monotonic())
            return trigger_id

    def inject(self, method: str, *, status: int = 429, retry_after: int | None = 1, times: int = 1,
               delay_s: float = 0.0, error: str | None = None, disconnect: bool = False) -> None:
        """Make the next `times` calls to `method` fail (or just be slow); nothing they ask for happens.

        - default: HTTP 429 with `Retry-After: retry_after` and `{"ok": false, "error": "ratelimited"}`;
        - `status=500` etc.: that HTTP status;
        - `error="channel_not_found"`: HTTP 200 `{"ok": false, "error": ...}` (unless status is not 429/200);
        - `status=200` without `error`: only the delay, then the call is served normally;
        - `disconnect=True`: the connection is closed without any response.
        `method` may also be "response_url" or "files.upload" (the upload URL).
        """
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._faults.setdefault(method, []).append(
                Fault(status, retry_after, times, delay_s, error, disconnect))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    # ------------------------------------------------------------------ Slack-side reactions to the bot's HTTP answers

    def record_command_ack(self, *, channel: str, user: str, response: Any) -> None:
        """What Slack does with a slash command's ack body: show it to the user (or channel if in_channel)."""
        if not isinstance(response, dict) or not (response.get("text") or response.get("blocks")):
            return
        with self._lock:
            if response.get("response_type") == "in_channel":
                self._post(channel, response.get("text", ""), response.get("blocks"), None)
            else:
                self._add_ephemeral(channel, user, response.get("text", ""), response.get("blocks"), "ack")

    def apply_view_submission(self, view_id: str, response: Any) -> dict[str, str] | None:
        """What Slack does with a view_submission ack; returns the field errors when it asked for them."""
        with self._lock:
            user = self._view_users.get(view_id)
            stack = self._modal_stacks.get(user or "", [])
            action = response.get("response_action") if isinstance(response, dict) else None
            if action == "errors":
                errors = response.get("errors") or {}
                return {str(k): str(v) for k, v in errors.items()}
            if action == "update" and isinstance(response.get("view"), dict):
                old = self._views.get(view_id, {})
                self._views[view_id] = self._make_view(response["view"], view_id=view_id,
                                                       root=old.get("root_view_id"),
                                                       previous=old.get("previous_view_id"))
            elif action == "push" and isinstance(response.get("view"), dict) and user:
                new = self._make_view(response["view"], root=stack[0] if stack else view_id, previous=view_id)
                self._views[new["id"]] = new
                self._view_users[new["id"]] = user
                stack.append(new["id"])
            elif action == "clear":
                stack.clear()
            elif view_id in stack:
                stack.remove(view_id)
            return None

    def dismiss_modals(self, user: str) -> None:
        """The user closed their modals (the × button); no view_closed event is sent."""
        with self._lock:
            self._modal_stacks.pop(user, None)

    # ------------------------------------------------------------------ request handling

    def _take_fault(self, method: str) -> Fault | None:
        with self._lock:
            pending = self._faults.get(method)
            if not pending:
                return None
            fault = pending[0]
            fault.times -= 1
            if fault.times <= 0:
                pending.pop(0)
            return fault

    def _record(self, method: str, args: dict[str, Any], result: _Result, injected: bool = False) -> None:
        with self._lock:
            self._calls.append(Call(method, args, copy.deepcopy(result.body), time.time(), result.status,
                                    injected))

    def _serve(self, method: str, args: dict[str, Any], handler: Callable[[], _Result]) -> _Result | None:
        """Apply faults, run the handler, record the call. None means: drop the connection."""
        if self.latency_s:
            time.sleep(self.latency_s)
        fault = self._take_fault(method)
        if fault is not None:
            if fault.delay_s:
                time.sleep(fault.delay_s)
            if fault.disconnect:
                self._record(method, args, _Result(0, {"ok": False, "error": "disconnected"}), injected=True)
                return None
            if fault.error is not None or fault.status != 200:
                result = self._fault_result(fault)
                self._record(method, args, result, injected=True)
                return result
        result = handler()
        self._record(method, args, result, injected=fault is not None)
        return result

    @staticmethod
    def _fault_result(fault: Fault) -> _Result:
        if fault.error is not None and fault.status in (200, 429):
            return _Result(200, {"ok": False, "error": fault.error})
        headers: dict[str, str] = {}
        if fault.status == 429:
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            return _Result(429, {"ok": False, "error": "ratelimited"}, headers=headers)
        return _Result(fault.status, {"ok": False, "error": fault.error or "fatal_error"})

    def _handle_api(self, method: str, args: dict[str, Any], bearer: str | None) -> _Result:
        token = bearer or args.pop("token", None)
        args.pop("token", None)

        def run() -> _Result:
            impl = _METHODS.get(method)
            if impl is None:
                return _Result(200, {"ok": False, "error": "unknown_method"})
            # apps.connections.open takes the app-level token (xapp-), every other method the bot token
            if token != (self.app_token if method == "apps.connections.open" else self.token):
                return _Result(200, {"ok": False, "error": "invalid_auth"})
            try:
                with self._lock:
                    body = impl(self, args)
            except _ApiError as exc:
                body = {"ok": False, "error": exc.error, **exc.extra}
            return _Result(200, body)

        return self._serve(method, args, run) or _Result(0)

    def _handle_response_url(self, url_id: str, payload: Any) -> _Result | None:
        args = {"url_id": url_id, **(payload if isinstance(payload, dict) else {"raw": payload})}

        def run() -> _Result:
            with self._lock:
                target = self._response_targets.get(url_id)
                if target is None or target.uses >= RESPONSE_URL_MAX_USES:
                    return _Result(404, {"ok": False, "error": "expired_url"})
                if not isinstance(payload, dict):
                    return _Result(400, {"ok": False, "error": "invalid_payload"})
                blocks = payload.get("blocks")
                if blocks is not None:
                    errors = validate_blocks(blocks, surface="message")
                    if errors:
                        return _Result(400, {"ok": False, "error": "invalid_blocks", "errors": errors})
                target.uses += 1
                text = payload.get("text", "")
                original = (self._messages.get(target.channel or "", {}).get(target.message_ts or "")
                            if target.message_ts else None)
                ephemeral = (None if original is not None or not target.message_ts else
                             next((e for e in self._ephemerals if e["ts"] == target.message_ts), None))
                if _truthy(payload.get("delete_original")):
                    if original is not None:
                        del self._messages[target.channel or ""][original["ts"]]
                    elif ephemeral is not None:
                        self._ephemerals.remove(ephemeral)
                    else:
                        return _Result(404, {"ok": False, "error": "message_not_found"})
                elif _truthy(payload.get("replace_original")) and (original or ephemeral) is not None:
                    replaced = original if original is not None else ephemeral
                    assert replaced is not None
                    replaced["text"] = text
                    replaced["blocks"] = copy.deepcopy(blocks) if blocks is not None else []
                    replaced["edited"] = {"user": self.bot_user_id, "ts": self._next_ts()}
                elif payload.get("response_type") == "in_channel" and target.channel:
                    self._post(target.channel, text, blocks, payload.get("thread_ts"))
                else:
                    self._add_ephemeral(target.channel, target.user, text, blocks, "response_url",
                                        thread_ts=payload.get("thread_ts"))
                return _Result(200, {"ok": True})

        return self._serve("response_url", args, run)

    def _handle_upload(self, file_id: str, data: bytes) -> _Result | None:
        def run() -> _Result:
            with self._lock:
                upload = self._files.get(file_id)
                if upload is None or upload.completed:
                    return _Result(404, raw=b"Not Found")
                upload.content = data
            return _Result(200, {"ok": True}, raw=f"OK - {len(data)}".encode())

        return self._serve("files.upload", {"file_id": file_id, "size": len(data)}, run)

    # ------------------------------------------------------------------ state helpers (call with the lock held)

    def _next_ts(self) -> str:
        """Like Slack's: the posting time in epoch seconds with 6 decimals, unique and increasing per workspace."""
        self._seq = max(self._seq + 1, int(time.time() * 1_000_000))
        return f"{self._seq // 1_000_000}.{self._seq % 1_000_000:06d}"

    def _new_id(self, prefix: str) -> str:
        self._id_seq += 1
        return f"{prefix}0{self._id_seq:08d}"

    def _post(self, channel: str, text: str, blocks: list[Any] | None, thread_ts: str | None,
              **extra: Any) -> dict[str, Any]:
        ts = self._next_ts()
        msg: dict[str, Any] = {
            "type": "message", "ts": ts, "user": self.bot_user_id, "bot_id": self.bot_id,
            "app_id": self.app_id, "team": self.team_id, "text": text or "",
            "blocks": copy.deepcopy(blocks) if blocks is not None else [],
        }
        if thread_ts:
            msg["thread_ts"] = thread_ts
            parent = self._messages.get(channel, {}).get(thread_ts)
            if parent is not None:
                parent.setdefault("thread_ts", thread_ts)
                parent["reply_count"] = parent.get("reply_count", 0) + 1
                parent["latest_reply"] = ts
        msg.update(extra)
        self._messages.setdefault(channel, {})[ts] = msg
        return msg

    def _add_ephemeral(self, channel: str | None, user: str | None, text: str, blocks: Any, source: str,
                       thread_ts: str | None = None) -> dict[str, Any]:
        eph = {"type": "message", "subtype": "ephemeral", "ts": self._next_ts(), "channel": channel,
               "user": user, "text": text or "", "blocks": copy.deepcopy(blocks) if blocks else [],
               "source": source, "thread_ts": thread_ts}
        self._ephemerals.append(eph)
        return eph

    def _use_trigger(self, trigger_id: Any) -> str:
        trigger = self._triggers.get(trigger_id) if isinstance(trigger_id, str) else None
        if trigger is None:
            raise _ApiError("invalid_trigger_id")
        if trigger.used:
            raise _ApiError("exchanged_trigger_id")
        if self.trigger_ttl_s is not None and time.monotonic() - trigger.issued_at > self.trigger_ttl_s:
            raise _ApiError("expired_trigger_id")
        trigger.used = True
        return trigger.user

    def _make_view(self, view: dict[str, Any], *, view_id: str | None = None, root: str | None = None,
                   previous: str | None = None) -> dict[str, Any]:
        view_id = view_id or self._new_id("V")
        out = copy.deepcopy(view)
        out.update({
            "id": view_id, "team_id": self.team_id, "app_id": self.app_id, "bot_id": self.bot_id,
            "hash": f"{int(time.time())}.{uuid.uuid4().hex[:8]}", "state": {"values": {}},
            "root_view_id": root or view_id, "previous_view_id": previous,
            "private_metadata": view.get("private_metadata", ""), "callback_id": view.get("callback_id", ""),
            "external_id": view.get("external_id", ""), "blocks": copy.deepcopy(view.get("blocks", [])),
        })
        return out


# ---------------------------------------------------------------------- Web API methods (lock held)

def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in ("true", "1")) or value == 1


def _ts_key(ts: str) -> tuple[int, int]:
    sec, _, frac = ts.partition(".")
    return int(sec), int(frac or 0)


def _require(args: dict[str, Any], *names: str) -> None:
    missing = [n for n in names if args.get(n) in (None, "")]
    if missing:
        raise _ApiError("invalid_arguments",
                        response_metadata={"messages": [f"[ERROR] missing required field: {n}" for n in missing]})


def _refuse_invalid_blocks(blocks: Any, surface: Surface = "message") -> None:
    if blocks is None:
        return
    errors = validate_blocks(blocks, surface=surface)
    if errors:
        raise _ApiError("invalid_blocks", errors=errors)


def _find(fake: FakeSlack, channel: str, ts: Any) -> dict[str, Any]:
    msg = fake._messages.get(channel, {}).get(ts) if isinstance(ts, str) else None
    if msg is None:
        raise _ApiError("message_not_found")
    return msg


def _auth_test(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "url": "https://devslack.slack.com/", "team": "DevSlack", "user": "migrate-bot",
            "team_id": fake.team_id, "user_id": fake.bot_user_id, "bot_id": fake.bot_id,
            "is_enterprise_install": False}


def _apps_connections_open(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    """Socket Mode's handshake: the WebSocket URL to connect to."""
    if fake.socket_mode_url is None:
        raise _ApiError("socket_mode_not_enabled")
    return {"ok": True, "url": fake.socket_mode_url}


def _chat_post_message(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    _require(args, "channel")
    if not args.get("text") and not args.get("blocks") and not args.get("attachments"):
        raise _ApiError("invalid_arguments", response_metadata={
            "messages": ["[ERROR] one of text, blocks or attachments is required"]})
    _refuse_invalid_blocks(args.get("blocks"))
    text = str(args.get("text") or "")[:MAX_POST_TEXT]
    extra: dict[str, Any] = {}
    if args.get("attachments"):
        extra["attachments"] = copy.deepcopy(args["attachments"])
    if args.get("metadata"):
        extra["metadata"] = copy.deepcopy(args["metadata"])
    if args.get("thread_ts") and _truthy(args.get("reply_broadcast")):
        extra["subtype"] = "thread_broadcast"
    msg = fake._post(args["channel"], text, args.get("blocks"), args.get("thread_ts"), **extra)
    return {"ok": True, "channel": args["channel"], "ts": msg["ts"], "message": copy.deepcopy(msg)}


def _chat_update(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    _require(args, "channel", "ts")
    text = args.get("text")
    if isinstance(text, str) and len(text) > MAX_MESSAGE_UPDATE_TEXT:
        raise _ApiError("msg_too_long")
    _refuse_invalid_blocks(args.get("blocks"))
    msg = _find(fake, args["channel"], args["ts"])
    # docs.slack.dev chat.update: without `blocks` the old blocks survive only when `text` is absent too;
    # text-only updates drop them. The `edited` flag shows only for updates without blocks.
    if args.get("blocks") is not None:
        msg["blocks"] = copy.deepcopy(args["blocks"])
    elif text is not None:
        msg["blocks"] = []
        msg["edited"] = {"user": fake.bot_user_id, "ts": fake._next_ts()}
    if text is not None:
        msg["text"] = str(text)
    if args.get("attachments") is not None:
        msg["attachments"] = copy.deepcopy(args["attachments"])
    return {"ok": True, "channel": args["channel"], "ts": msg["ts"], "text": msg["text"],
            "message": copy.deepcopy(msg)}


def _chat_post_ephemeral(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    _require(args, "channel", "user")
    if not args.get("text") and not args.get("blocks") and not args.get("attachments"):
        raise _ApiError("invalid_arguments", response_metadata={
            "messages": ["[ERROR] one of text, blocks or attachments is required"]})
    _refuse_invalid_blocks(args.get("blocks"))
    eph = fake._add_ephemeral(args["channel"], args["user"], str(args.get("text") or ""), args.get("blocks"),
                              "chat.postEphemeral", thread_ts=args.get("thread_ts"))
    return {"ok": True, "message_ts": eph["ts"]}


def _chat_delete(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    _require(args, "channel", "ts")
    msg = _find(fake, args["channel"], args["ts"])
    del fake._messages[args["channel"]][msg["ts"]]
    return {"ok": True, "channel": args["channel"], "ts": msg["ts"]}


def _chat_get_permalink(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    _require(args, "channel", "message_ts")
    msg = _find(fake, args["channel"], args["message_ts"])
    link = f"https://devslack.slack.com/archives/{args['channel']}/p{msg['ts'].replace('.', '')}"
    if msg.get("thread_ts") and msg["thread_ts"] != msg["ts"]:
        link += f"?thread_ts={msg['thread_ts']}&cid={args['channel']}"
    return {"ok": True, "channel": args["channel"], "permalink": link}


def _valid_view(view: Any) -> dict[str, Any]:
    if not isinstance(view, dict):
        raise _ApiError("invalid_arguments", response_metadata={"messages": ["[ERROR] view must be an object"]})
    errors = validate_view(view, include_blocks=False)
    if errors:
        raise _ApiError("invalid_arguments", response_metadata={"messages": [f"[ERROR] {e}" for e in errors]},
                        errors=errors)
    _refuse_invalid_blocks(view.get("blocks", []), surface=view["type"])
    return view


def _views_open(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    _require(args, "trigger_id", "view")
    view = _valid_view(args["view"])
    if view.get("type") != "modal":
        raise _ApiError("invalid_arguments", response_metadata={"messages": ["[ERROR] views.open needs a modal"]})
    user = fake._use_trigger(args["trigger_id"])
    made = fake._make_view(view)
    fake._views[made["id"]] = made
    fake._view_users[made["id"]] = user
    fake._modal_stacks[user] = [made["id"]]
    return {"ok": True, "view": copy.deepcopy(made)}


def _views_push(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    _require(args, "trigger_id", "view")
    view = _valid_view(args["view"])
    user = fake._use_trigger(args["trigger_id"])
    stack = fake._modal_stacks.setdefault(user, [])
    if not stack:
        raise _ApiError("not_found")
    if len(stack) >= MAX_MODAL_STACK:
        raise _ApiError("push_limit_reached")
    made = fake._make_view(view, root=stack[0], previous=stack[-1])
    fake._views[made["id"]] = made
    fake._view_users[made["id"]] = user
    stack.append(made["id"])
    return {"ok": True, "view": copy.deepcopy(made)}


def _views_update(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    _require(args, "view")
    view = _valid_view(args["view"])
    view_id = args.get("view_id")
    if not view_id and args.get("external_id"):
        view_id = next((v["id"] for v in fake._views.values() if v.get("external_id") == args["external_id"]), None)
    if not view_id or view_id not in fake._views:
        raise _ApiError("not_found")
    old = fake._views[view_id]
    if args.get("hash") and args["hash"] != old["hash"]:
        raise _ApiError("hash_conflict")
    made = fake._make_view(view, view_id=view_id, root=old.get("root_view_id"),
                           previous=old.get("previous_view_id"))
    fake._views[view_id] = made
    return {"ok": True, "view": copy.deepcopy(made)}


def _views_publish(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    _require(args, "user_id", "view")
    view = _valid_view(args["view"])
    if view.get("type") != "home":
        raise _ApiError("invalid_arguments", response_metadata={"messages": ["[ERROR] views.publish needs a home view"]})
    old = fake._homes.get(args["user_id"])
    if old and args.get("hash") and args["hash"] != old["hash"]:
        raise _ApiError("hash_conflict")
    made = fake._make_view(view, view_id=old["id"] if old else None)
    fake._homes[args["user_id"]] = made
    return {"ok": True, "view": copy.deepcopy(made)}


def _users_info(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    _require(args, "user")
    user = fake._users.get(args["user"])
    if user is None:
        raise _ApiError("user_not_found")
    return {"ok": True, "user": copy.deepcopy(user)}


def _usergroups_users_list(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    _require(args, "usergroup")
    group = fake._usergroups.get(args["usergroup"])
    if group is None:
        raise _ApiError("no_such_subteam")
    return {"ok": True, "users": list(group["users"])}


def _conversations_info(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    _require(args, "channel")
    channel = fake._channels.get(args["channel"])
    if channel is None:
        raise _ApiError("channel_not_found")
    return {"ok": True, "channel": copy.deepcopy(channel)}


def _window(args: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    """conversations.history/.replies' oldest/latest bounds (exclusive unless inclusive=true)."""
    try:
        oldest = float(args.get("oldest") or 0)
        latest = float(args["latest"]) if args.get("latest") else None
    except (TypeError, ValueError):
        raise _ApiError("invalid_arguments") from None
    inclusive = _truthy(args.get("inclusive"))

    def within(msg: dict[str, Any]) -> bool:
        ts = float(msg["ts"])
        above = ts >= oldest if inclusive else ts > oldest
        below = latest is None or (ts <= latest if inclusive else ts < latest)
        return above and below

    return within


def _page(fake: FakeSlack, args: dict[str, Any], msgs: list[dict[str, Any]]) -> dict[str, Any]:
    """One cursor page (limit default 100, at most 999); metadata only with include_all_metadata."""
    try:
        limit = min(max(int(args.get("limit") or 100), 1), 999)
        start = int(args.get("cursor") or 0)
    except (TypeError, ValueError):
        raise _ApiError("invalid_cursor") from None
    page = [copy.deepcopy(m) for m in msgs[start:start + limit]]
    if not _truthy(args.get("include_all_metadata")):
        for msg in page:
            msg.pop("metadata", None)
    more = start + limit < len(msgs)
    return {"ok": True, "messages": page, "has_more": more,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""}}


def _conversations_history(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    """Top-level messages (and thread broadcasts) of a channel, newest first."""
    _require(args, "channel")
    if args["channel"] not in fake._messages and args["channel"] not in fake._channels:
        raise _ApiError("channel_not_found")
    within = _window(args)
    msgs = [m for m in fake._messages.get(args["channel"], {}).values()
            if (m.get("thread_ts") in (None, m["ts"]) or m.get("subtype") == "thread_broadcast") and within(m)]
    return _page(fake, args, sorted(msgs, key=lambda m: _ts_key(m["ts"]), reverse=True))


def _conversations_replies(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    """A thread: its parent first, then the replies, oldest first."""
    _require(args, "channel", "ts")
    parent = fake._messages.get(args["channel"], {}).get(args["ts"])
    if parent is None:
        raise _ApiError("thread_not_found")
    within = _window(args)
    msgs = [m for m in fake._messages[args["channel"]].values()
            if (m["ts"] == args["ts"] or m.get("thread_ts") == args["ts"]) and within(m)]
    return _page(fake, args, sorted(msgs, key=lambda m: _ts_key(m["ts"])))


def _files_get_upload_url(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    _require(args, "filename", "length")
    try:
        length = int(args["length"])
    except (TypeError, ValueError):
        raise _ApiError("invalid_arguments") from None
    file_id = fake._new_id("F")
    fake._files[file_id] = FileUpload(id=file_id, name=str(args["filename"]), length=length)
    return {"ok": True, "upload_url": f"{fake.root_url}upload/{file_id}", "file_id": file_id}


def _files_complete_upload(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    _require(args, "files")
    items = args["files"]
    if not isinstance(items, list) or not items:
        raise _ApiError("invalid_arguments")
    uploads: list[FileUpload] = []
    for item in items:
        upload = fake._files.get(str(item.get("id"))) if isinstance(item, dict) else None
        if upload is None or upload.completed:
            raise _ApiError("file_not_found")
        if upload.length is not None and upload.length != len(upload.content):
            raise _ApiError("file_upload_size_mismatch")
        uploads.append(upload)
    channel = args.get("channel_id") or (str(args["channels"]).split(",")[0] if args.get("channels") else None)
    infos = []
    for upload, item in zip(uploads, items, strict=True):
        upload.completed = True
        upload.title = item.get("title") or upload.name
        upload.channel = channel
        upload.thread_ts = args.get("thread_ts") or None
        infos.append({"id": upload.id, "name": upload.name, "title": upload.title, "size": len(upload.content),
                      "user": fake.bot_user_id,
                      "permalink": f"https://devslack.slack.com/files/{fake.bot_user_id}/{upload.id}/{upload.name}"})
    if channel:
        fake._post(channel, str(args.get("initial_comment") or ""), None, args.get("thread_ts") or None,
                   files=copy.deepcopy(infos), upload=True)
    return {"ok": True, "files": infos}


def _reactions_add(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    _require(args, "channel", "timestamp", "name")
    msg = _find(fake, args["channel"], args["timestamp"])
    reactions = msg.setdefault("reactions", [])
    for reaction in reactions:
        if reaction["name"] == args["name"]:
            if fake.bot_user_id in reaction["users"]:
                raise _ApiError("already_reacted")
            reaction["users"].append(fake.bot_user_id)
            reaction["count"] += 1
            break
    else:
        reactions.append({"name": args["name"], "users": [fake.bot_user_id], "count": 1})
    return {"ok": True}


_METHODS: dict[str, Callable[[FakeSlack, dict[str, Any]], dict[str, Any]]] = {
    "auth.test": _auth_test,
    "apps.connections.open": _apps_connections_open,
    "chat.postMessage": _chat_post_message,
    "chat.update": _chat_update,
    "chat.postEphemeral": _chat_post_ephemeral,
    "chat.delete": _chat_delete,
    "chat.getPermalink": _chat_get_permalink,
    "views.open": _views_open,
    "views.push": _views_push,
    "views.update": _views_update,
    "views.publish": _views_publish,
    "users.info": _users_info,
    "usergroups.users.list": _usergroups_users_list,
    "conversations.info": _conversations_info,
    "conversations.history": _conversations_history,
    "conversations.replies": _conversations_replies,
    "files.getUploadURLExternal": _files_get_upload_url,
    "files.completeUploadExternal": _files_complete_upload,
    "reactions.add": _reactions_add,
}


# ---------------------------------------------------------------------- HTTP plumbing

def _parse_args(query: str, body: bytes, content_type: str) -> dict[str, Any]:
    args: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    if body:
        if "json" in content_type:
            data = json.loads(body.decode("utf-8"))
            if not isinstance(data, dict):
                raise ValueError("JSON body must be an object")
            args.update(data)
        else:
            args.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    for key in _JSON_ARGS:
        value = args.get(key)
        if isinstance(value, str) and value[:1] in ("[", "{"):
            try:
                args[key] = json.loads(value)
            except json.JSONDecodeError:
                pass
    return args


class _Handler(BaseHTTPRequestHandler):
    owner: FakeSlack
    server_version = "devslack/1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature from the base class
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._dispatch(b"")

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        self._dispatch(self.rfile.read(length) if length else b"")

    def _dispatch(self, body: bytes) -> None:
        parts = urlsplit(self.path)
        path = parts.path.strip("/").split("/")
        fake = self.owner
        try:
            if len(path) == 2 and path[0] == "api":
                auth = self.headers.get("Authorization") or ""
                bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else None
                try:
                    args = _parse_args(parts.query, body, self.headers.get("Content-Type") or "")
                except (ValueError, UnicodeDecodeError):
                    result: _Result | None = _Result(200, {"ok": False, "error": "invalid_json"})
                else:
                    result = fake._handle_api(path[1], args, bearer)
            elif len(path) == 2 and path[0] == "response" and self.command == "POST":
                try:
                    payload = json.loads(body.decode("utf-8")) if body else {}
                except (ValueError, UnicodeDecodeError):
                    payload = dict(parse_qsl(body.decode("utf-8", "replace")))
                result = fake._handle_response_url(path[1], payload)
            elif len(path) == 2 and path[0] == "upload" and self.command == "POST":
                result = fake._handle_upload(path[1], body)
            else:
                result = _Result(404, raw=b"not found")
        except Exception as exc:  # a bug in the fake must show up as a 500, not a hung client
            result = _Result(500, {"ok": False, "error": "fake_internal_error", "detail": repr(exc)})
        if result is None or result.status == 0:
            self.close_connection = True
            return
        raw = result.raw if result.raw is not None else json.dumps(result.body).encode()
        self.send_response(result.status)
        content_type = "application/json; charset=utf-8" if result.raw is None else "text/plain; charset=utf-8"
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(raw)))
        for name, value in result.headers.items():
            self.send_header(name, value)
        try:
            self.end_headers()
            self.wfile.write(raw)
        except (BrokenPipeError, ConnectionResetError):  # the caller is gone (a killed bot): Slack shrugs too
            self.close_connection = True


def main(argv: list[str] | None = None) -> int:
    """Run FakeSlack standalone until interrupted, printing its base URL."""
    parser = argparse.ArgumentParser(prog="python -m bot.devtools.slack.server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default="xoxb-devslack-token")
    args = parser.parse_args(argv)
    fake = FakeSlack(token=args.token, host=args.host, port=args.port, trigger_ttl_s=None).start()
    print(f"devslack Web API at {fake.base_url} (token {args.token})", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
