"""SlackSender: signed slash commands, button clicks, view submissions and events, sent to the bot as Slack does."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx
from slack_sdk.signature import SignatureVerifier

from bot.devtools.slack.blockkit import iter_elements, text_of

if TYPE_CHECKING:
    from bot.devtools.slack.server import FakeSlack


@dataclass(frozen=True)
class Button:
    """A clickable button of a message, in display order."""

    action_id: str
    text: str
    value: str | None
    style: str | None
    confirm: dict[str, Any] | None
    block_id: str | None


class ElementNotFound(LookupError):
    """The message has no interactive element with the requested action_id."""


def buttons(message: dict[str, Any]) -> list[Button]:
    """The buttons of a message (actions blocks and section accessories), in order."""
    found: list[Button] = []
    for block in message.get("blocks") or []:
        if not isinstance(block, dict):
            continue
        for element in iter_elements(block):
            if element.get("type") == "button" and element.get("action_id"):
                found.append(Button(element["action_id"], text_of(element.get("text")), element.get("value"),
                                    element.get("style"), element.get("confirm"), block.get("block_id")))
    return found


def find_element(message: dict[str, Any], action_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(block, element) for `action_id` in the message's blocks; ElementNotFound if absent."""
    seen: list[str] = []
    for block in message.get("blocks") or []:
        if not isinstance(block, dict):
            continue
        for element in iter_elements(block):
            if element.get("action_id") == action_id:
                return block, element
            if element.get("action_id"):
                seen.append(str(element["action_id"]))
    raise ElementNotFound(f"no element with action_id {action_id!r} in message ts={message.get('ts')!r}; "
                          f"action_ids present: {seen or 'none'}")


def _action_ts() -> str:
    return f"{time.time():.6f}"


class SlackSender:
    """Posts Slack-shaped, correctly signed requests to the bot's request URL (sync httpx)."""

    def __init__(self, bot_url: str, signing_secret: str, *, team_id: str = "T0DEV", api_app_id: str = "A0DEV",
                 fake: FakeSlack | None = None, team_domain: str = "devslack", timeout_s: float = 10.0) -> None:
        self.bot_url = bot_url
        self.team_id = team_id
        self.api_app_id = api_app_id
        self.team_domain = team_domain
        self.fake = fake
        self._verifier = SignatureVerifier(signing_secret)
        self._http = httpx.Client(timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SlackSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    buttons = staticmethod(buttons)

    # ------------------------------------------------------------------ signing

    def sign(self, body: str, timestamp: int | None = None) -> dict[str, str]:
        """The X-Slack-Request-Timestamp / X-Slack-Signature headers for a raw body."""
        ts = str(int(time.time()) if timestamp is None else timestamp)
        signature = self._verifier.generate_signature(timestamp=ts, body=body)
        assert signature is not None
        return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature}

    def post_raw(self, body: str, content_type: str, *, timestamp: int | None = None,
                 signature: str | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
        """Sign and POST a raw body; `timestamp`/`signature` override the honest values (for attack tests)."""
        signed = self.sign(body, timestamp)
        if signature is not None:
            signed["X-Slack-Signature"] = signature
        return self._http.post(self.bot_url, content=body.encode("utf-8"),
                               headers={"Content-Type": content_type, **signed, **(headers or {})})

    def _post_form(self, fields: dict[str, str], **kw: Any) -> httpx.Response:
        return self.post_raw(urlencode(fields), "application/x-www-form-urlencoded", **kw)

    def _post_payload(self, payload: dict[str, Any], **kw: Any) -> httpx.Response:
        return self._post_form({"payload": json.dumps(payload)}, **kw)

    # ------------------------------------------------------------------ helpers

    def _user_name(self, user_id: str) -> str:
        name = self.fake.user_name(user_id) if self.fake else None
        return name or user_id.lower()

    def _user(self, user_id: str) -> dict[str, str]:
        name = self._user_name(user_id)
        return {"id": user_id, "username": name, "name": name, "team_id": self.team_id}

    def _trigger_id(self, user_id: str) -> str:
        if self.fake is not None:
            return self.fake.issue_trigger_id(user_id)
        return f"{int(time.time())}.{self.team_id}.{uuid.uuid4().hex[:16]}"

    def _response_url(self, channel_id: str | None, user_id: str, message_ts: str | None = None) -> str:
        if self.fake is not None:
            return self.fake.response_url(channel_id, user_id, message_ts)
        return f"https://hooks.slack.com/actions/{self.team_id}/{uuid.uuid4().int % 10**12}/{uuid.uuid4().hex}"

    def _channel(self, channel_id: str) -> dict[str, str]:
        name = (self.fake.channel_name(channel_id) if self.fake else None) or channel_id.lower()
        return {"id": channel_id, "name": name}

    @staticmethod
    def _json_body(response: httpx.Response) -> Any:
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return {"text": response.text}

    # ------------------------------------------------------------------ requests

    def slash(self, user_id: str, text: str, *, channel_id: str, command: str = "/migrate",
              timestamp: int | None = None, signature: str | None = None) -> httpx.Response:
        """A slash command; an ack body with text is shown to the user by the fake, as Slack does."""
        fields = {
            "token": "devslack-verification-token",
            "team_id": self.team_id,
            "team_domain": self.team_domain,
            "channel_id": channel_id,
            "channel_name": self._channel(channel_id)["name"],
            "user_id": user_id,
            "user_name": self._user_name(user_id),
            "command": command,
            "text": text,
            "api_app_id": self.api_app_id,
            "is_enterprise_install": "false",
            "response_url": self._response_url(channel_id, user_id),
            "trigger_id": self._trigger_id(user_id),
        }
        response = self._post_form(fields, timestamp=timestamp, signature=signature)
        if self.fake is not None and response.status_code == 200:
            self.fake.record_command_ack(channel=channel_id, user=user_id, response=self._json_body(response))
        return response

    def click(self, user_id: str, *, channel_id: str, message: dict[str, Any], action_id: str,
              value: str | None = None, timestamp: int | None = None, signature: str | None = None,
              is_ephemeral: bool = False) -> httpx.Response:
        """A block_actions click on the element `action_id` of `message` (which must carry ts and blocks)."""
        block, element = find_element(message, action_id)
        action: dict[str, Any] = {"action_id": action_id, "block_id": block.get("block_id"),
                                  "type": element.get("type"), "action_ts": _action_ts()}
        if element.get("type") == "button":
            action["text"] = element.get("text")
            action["value"] = element.get("value") if value is None else value
            if element.get("style"):
                action["style"] = element["style"]
        elif value is not None:
            options = element.get("options") or []
            chosen = next((o for o in options if o.get("value") == value), {"value": value})
            action["selected_option"] = chosen
        ts = message.get("ts")
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": self._user(user_id),
            "api_app_id": self.api_app_id,
            "token": "devslack-verification-token",
            "container": {"type": "message", "message_ts": ts, "channel_id": channel_id,
                          "is_ephemeral": is_ephemeral},
            "trigger_id": self._trigger_id(user_id),
            "team": {"id": self.team_id, "domain": self.team_domain},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": self._channel(channel_id),
            "message": message,
            "state": {"values": {}},
            "response_url": self._response_url(channel_id, user_id, ts),
            "actions": [action],
        }
        return self._post_payload(payload, timestamp=timestamp, signature=signature)

    def submit_view(self, user_id: str, view: dict[str, Any],
                    values: dict[str, dict[str, dict[str, Any]]], *, timestamp: int | None = None,
                    signature: str | None = None) -> httpx.Response:
        """A view_submission of `view` (as returned by views.open) with `state.values`.

        The fake then applies the bot's ack (close / update / push / clear, or keep open on errors).
        """
        submitted = dict(view)
        submitted["state"] = {"values": values}
        submitted.setdefault("private_metadata", "")
        submitted.setdefault("callback_id", "")
        submitted.setdefault("hash", f"{int(time.time())}.{uuid.uuid4().hex[:8]}")
        submitted.setdefault("id", f"V{uuid.uuid4().hex[:10].upper()}")
        submitted.setdefault("team_id", self.team_id)
        submitted.setdefault("app_id", self.api_app_id)
        payload = {
            "type": "view_submission",
            "team": {"id": self.team_id, "domain": self.team_domain},
            "user": self._user(user_id),
            "api_app_id": self.api_app_id,
            "token": "devslack-verification-token",
            "trigger_id": self._trigger_id(user_id),
            "view": submitted,
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }
        response = self._post_payload(payload, timestamp=timestamp, signature=signature)
        if self.fake is not None and response.status_code == 200:
            self.fake.apply_view_submission(submitted["id"], self._json_body(response))
        return response

    def event(self, payload: dict[str, Any], *, timestamp: int | None = None, signature: str | None = None,
              event_id: str | None = None, retry_num: int | None = None,
              retry_reason: str = "http_timeout") -> httpx.Response:
        """An Events API `event_callback` envelope around `payload` (JSON body, signed).

        Pass the same `event_id` with `retry_num=1..3` to imitate Slack's redeliveries
        (X-Slack-Retry-Num / X-Slack-Retry-Reason headers).
        """
        envelope = {
            "token": "devslack-verification-token",
            "team_id": self.team_id,
            "api_app_id": self.api_app_id,
            "event": payload,
            "type": "event_callback",
            "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(time.time()),
            "authorizations": [{"enterprise_id": None, "team_id": self.team_id,
                                "user_id": self.fake.bot_user_id if self.fake else "U0BOT",
                                "is_bot": True, "is_enterprise_install": False}],
            "is_ext_shared_channel": False,
        }
        headers = ({"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": retry_reason}
                   if retry_num is not None else None)
        return self.post_raw(json.dumps(envelope), "application/json", timestamp=timestamp, signature=signature,
                             headers=headers)

    def home_opened(self, user_id: str) -> httpx.Response:
        """The `app_home_opened` event for the Home tab (with the current home view when one exists)."""
        event: dict[str, Any] = {"type": "app_home_opened", "user": user_id, "channel": f"D{user_id[1:]}",
                                 "tab": "home", "event_ts": _action_ts()}
        home = self.fake.home(user_id) if self.fake else None
        if home is not None:
            event["view"] = home
        return self.event(event)
