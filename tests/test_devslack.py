"""Tests for bot.devtools.slack: the Slack Web API fake, the signed request sender and the terminal console."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier

from bot.devtools.slack import (
    Console,
    ElementNotFound,
    FakeSlack,
    SlackSender,
    buttons,
    validate_blocks,
    validate_view,
)

SECRET = "devslack-test-signing-secret"


def section(text: str, block_id: str | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "section", "text": {"type": "mrkdwn", "text": text}}
    if block_id:
        block["block_id"] = block_id
    return block


def button(action_id: str, text: str, value: str = "v", **extra: Any) -> dict[str, Any]:
    return {"type": "button", "action_id": action_id, "text": {"type": "plain_text", "text": text},
            "value": value, **extra}


CONFIRM = {"title": {"type": "plain_text", "text": "Approve prod?"},
           "text": {"type": "mrkdwn", "text": "This runs the migration on *prod*."},
           "confirm": {"type": "plain_text", "text": "Approve"}, "deny": {"type": "plain_text", "text": "Cancel"}}


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack() as server:
        yield server


@pytest.fixture
def client(fake: FakeSlack) -> WebClient:
    return WebClient(token=fake.token, base_url=fake.base_url, timeout=5)


class _Recorder:
    """A tiny HTTP receiver that checks Slack signatures and records every request."""

    def __init__(self, secret: str) -> None:
        self.verifier = SignatureVerifier(secret)
        self.requests: list[tuple[dict[str, str], bytes, bool]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                valid = owner.verifier.is_valid_request(body, headers)
                owner.requests.append((headers, body, valid))
                self.send_response(200 if valid else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/slack/events"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder() -> Iterator[_Recorder]:
    rec = _Recorder(SECRET)
    yield rec
    rec.close()


class TestBlockKit:
    def test_valid_message_has_no_errors(self) -> None:
        """A section plus an actions block within every limit validates cleanly."""
        blocks = [section("hi", "b1"), {"type": "actions", "block_id": "b2",
                                        "elements": [button("approve", "Approve", confirm=CONFIRM)]}]
        assert validate_blocks(blocks, surface="message") == []

    def test_block_count_depends_on_surface(self) -> None:
        """Sixty blocks are too many for a message but fine in a modal."""
        blocks = [{"type": "divider"} for _ in range(60)]
        assert any("at most 50" in e for e in validate_blocks(blocks, surface="message"))
        assert validate_blocks(blocks, surface="modal") == []

    def test_action_ids_must_be_unique_across_the_message(self) -> None:
        """The same action_id in two different actions blocks is reported."""
        blocks = [{"type": "actions", "elements": [button("go", "Go")]},
                  {"type": "actions", "elements": [button("go", "Go again")]}]
        errors = validate_blocks(blocks, surface="message")
        assert len(errors) == 1 and "'go'" in errors[0]

    def test_limits_on_text_buttons_and_confirm(self) -> None:
        """Header, field, button and confirm limits each produce one readable error."""
        long_confirm = {**CONFIRM, "title": {"type": "plain_text", "text": "t" * 101}}
        blocks = [
            {"type": "header", "text": {"type": "plain_text", "text": "h" * 151}},
            {"type": "section", "fields": [{"type": "mrkdwn", "text": "f" * 2001}]},
            {"type": "actions", "elements": [button("a", "b" * 76, value="v" * 2001, confirm=long_confirm)]},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11},
        ]
        errors = validate_blocks(blocks, surface="message")
        assert len(errors) == 6, errors
        assert any("blocks[0] (header)" in e and "151" in e for e in errors)

    def test_modal_title_and_metadata_limits(self) -> None:
        """A 25-character modal title and 3001 characters of private_metadata are rejected."""
        view = {"type": "modal", "title": {"type": "plain_text", "text": "x" * 25}, "private_metadata": "m" * 3001,
                "blocks": []}
        errors = validate_view(view)
        assert len(errors) == 2 and "title" in errors[0] and "private_metadata" in errors[1]


class TestFakeWebApi:
    def test_post_then_update_keeps_ts(self, fake: FakeSlack, client: WebClient) -> None:
        """chat.update replaces the blocks of the posted message and keeps its ts."""
        posted = client.chat_postMessage(channel="C1", text="run", blocks=[section("pending")])
        client.chat_update(channel="C1", ts=posted["ts"], text="run", blocks=[section("approved")])
        [message] = fake.channel_messages("C1")
        assert message["ts"] == posted["ts"]
        assert message["blocks"] == [section("approved")]
        assert [c.method for c in fake.calls] == ["chat.postMessage", "chat.update"]

    def test_concurrent_posts_are_all_recorded(self, fake: FakeSlack) -> None:
        """Twenty threads posting at once get twenty distinct ts values and twenty recorded calls."""
        results: list[str] = []

        def post(i: int) -> None:
            client = WebClient(token=fake.token, base_url=fake.base_url, timeout=5)
            results.append(client.chat_postMessage(channel="C1", text=str(i))["ts"])

        threads = [threading.Thread(target=post, args=(i,)) for i in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert len(set(results)) == 20 and len(fake.calls_to("chat.postMessage")) == 20
        assert len(fake.channel_messages("C1")) == 20

    def test_modal_block_limits(self, fake: FakeSlack, client: WebClient) -> None:
        """A modal allows 100 blocks (not 101) and a title of at most 24 characters."""
        def modal(n: int, title: str = "Ok") -> dict[str, Any]:
            return {"type": "modal", "title": {"type": "plain_text", "text": title},
                    "blocks": [{"type": "divider"}] * n}
        client.views_open(trigger_id=fake.issue_trigger_id("U1"), view=modal(100))
        with pytest.raises(SlackApiError, match="invalid_blocks"):
            client.views_open(trigger_id=fake.issue_trigger_id("U1"), view=modal(101))
        with pytest.raises(SlackApiError, match="invalid_arguments"):
            client.views_open(trigger_id=fake.issue_trigger_id("U1"), view=modal(1, "t" * 25))

    def test_ts_values_are_unique_and_increasing(self, client: WebClient) -> None:
        """Each posted message gets a larger ts than the one before."""
        stamps = [client.chat_postMessage(channel="C1", text=str(i))["ts"] for i in range(5)]
        assert stamps == sorted(stamps, key=float) and len(set(stamps)) == 5

    def test_history_and_replies_page_and_return_metadata_only_when_asked(self, client: WebClient) -> None:
        before = time.time() - 1
        meta = {"event_type": "e", "event_payload": {"n": 1}}
        parent = client.chat_postMessage(channel="C1", text="parent", metadata=meta)["ts"]
        client.chat_postMessage(channel="C1", text="reply", thread_ts=parent, metadata=meta)
        for i in range(3):
            client.chat_postMessage(channel="C1", text=f"m{i}")
        assert before < float(parent) < time.time() + 1  # ts is the posting time, as in Slack
        first = client.conversations_history(channel="C1", limit=2, oldest=str(before))
        assert [m["text"] for m in first["messages"]] == ["m2", "m1"] and first["has_more"]
        rest = client.conversations_history(channel="C1", limit=2, cursor=first["response_metadata"]["next_cursor"],
                                            include_all_metadata=True)
        assert [m["text"] for m in rest["messages"]] == ["m0", "parent"] and not rest["has_more"]
        assert rest["messages"][1]["metadata"] == meta
        assert "metadata" not in client.conversations_history(channel="C1")["messages"][-1]
        assert client.conversations_history(channel="C1", oldest=parent)["messages"][-1]["text"] == "m0"
        thread = client.conversations_replies(channel="C1", ts=parent, include_all_metadata=True)["messages"]
        assert [m["text"] for m in thread] == ["parent", "reply"] and thread[1]["metadata"] == meta

    def test_bad_token_is_invalid_auth(self, fake: FakeSlack) -> None:
        """A token other than the fake's is refused with invalid_auth."""
        with pytest.raises(SlackApiError) as info:
            WebClient(token="xoxb-wrong", base_url=fake.base_url).chat_postMessage(channel="C1", text="x")
        assert info.value.response["error"] == "invalid_auth"
        assert fake.channel_messages("C1") == []

    def test_too_many_blocks_is_invalid_blocks(self, client: WebClient) -> None:
        """51 blocks in a message are refused with invalid_blocks and a readable reason."""
        with pytest.raises(SlackApiError) as info:
            client.chat_postMessage(channel="C1", text="x", blocks=[{"type": "divider"}] * 51)
        assert info.value.response["error"] == "invalid_blocks"
        assert "51 blocks" in info.value.response["errors"][0]

    def test_duplicate_action_id_is_invalid_blocks(self, client: WebClient) -> None:
        """Two buttons sharing an action_id are refused."""
        blocks = [{"type": "actions", "elements": [button("approve", "A"), button("approve", "B")]}]
        with pytest.raises(SlackApiError) as info:
            client.chat_postMessage(channel="C1", text="x", blocks=blocks)
        assert info.value.response["error"] == "invalid_blocks"

    def test_long_section_is_invalid_blocks(self, client: WebClient) -> None:
        """A 3001-character section text is refused."""
        with pytest.raises(SlackApiError) as info:
            client.chat_postMessage(channel="C1", text="x", blocks=[section("y" * 3001)])
        assert info.value.response["error"] == "invalid_blocks"
        client.chat_postMessage(channel="C1", text="x", blocks=[section("y" * 3000)])

    def test_update_errors(self, client: WebClient) -> None:
        """chat.update of a missing message is message_not_found; over 4000 chars of text is msg_too_long."""
        with pytest.raises(SlackApiError, match="message_not_found"):
            client.chat_update(channel="C1", ts="1.000001", text="x")
        ts = client.chat_postMessage(channel="C1", text="x")["ts"]
        with pytest.raises(SlackApiError, match="msg_too_long"):
            client.chat_update(channel="C1", ts=ts, text="z" * 4001)

    def test_text_only_update_drops_blocks(self, fake: FakeSlack, client: WebClient) -> None:
        """As docs.slack.dev describes chat.update: text without blocks removes the old blocks."""
        ts = client.chat_postMessage(channel="C1", text="x", blocks=[section("old")])["ts"]
        client.chat_update(channel="C1", ts=ts, text="x", blocks=[section("kept")])
        assert fake.message("C1", ts)["blocks"] == [section("kept")]
        client.chat_update(channel="C1", ts=ts, text="plain now")
        assert fake.message("C1", ts)["blocks"] == [] and fake.message("C1", ts)["text"] == "plain now"

    def test_missing_arguments_and_unknown_method(self, client: WebClient) -> None:
        """A post without text or blocks is invalid_arguments; an unknown method is unknown_method."""
        with pytest.raises(SlackApiError, match="invalid_arguments"):
            client.api_call("chat.postMessage", json={"channel": "C1"})
        with pytest.raises(SlackApiError, match="unknown_method"):
            client.api_call("chat.frobnicate", json={})

    def test_form_encoded_bodies_are_understood(self, fake: FakeSlack, client: WebClient) -> None:
        """Form-encoded calls with JSON-encoded blocks work like JSON ones."""
        client.api_call("chat.postMessage", data={"channel": "C1", "text": "t",
                                                  "blocks": json.dumps([section("form")])})
        assert fake.channel_messages("C1")[0]["blocks"] == [section("form")]

    def test_threads_delete_permalink_and_reactions(self, fake: FakeSlack, client: WebClient) -> None:
        """Replies land in thread(), not channel_messages(); delete removes; reactions are recorded."""
        parent = client.chat_postMessage(channel="C1", text="parent")["ts"]
        client.chat_postMessage(channel="C1", text="log line", thread_ts=parent)
        assert [m["text"] for m in fake.channel_messages("C1")] == ["parent"]
        assert [m["text"] for m in fake.thread("C1", parent)] == ["log line"]
        assert "/archives/C1/p" in client.chat_getPermalink(channel="C1", message_ts=parent)["permalink"]
        client.reactions_add(channel="C1", timestamp=parent, name="white_check_mark")
        assert fake.message("C1", parent)["reactions"][0]["name"] == "white_check_mark"
        client.chat_delete(channel="C1", ts=parent)
        assert fake.channel_messages("C1") == []

    def test_directory_lookups(self, fake: FakeSlack, client: WebClient) -> None:
        """users.info, usergroups.users.list and conversations.info answer from the directory."""
        fake.add_user("U1", "alice", "Alice A")
        fake.add_usergroup("S1", "dba", ["U1", "U2"])
        fake.add_channel("C1", "db-ops")
        assert client.users_info(user="U1")["user"]["real_name"] == "Alice A"
        assert client.usergroups_users_list(usergroup="S1")["users"] == ["U1", "U2"]
        assert client.conversations_info(channel="C1")["channel"]["name"] == "db-ops"
        with pytest.raises(SlackApiError, match="user_not_found"):
            client.users_info(user="U404")

    def test_ephemeral_and_home(self, fake: FakeSlack, client: WebClient) -> None:
        """chat.postEphemeral and views.publish are visible through ephemerals() and home()."""
        client.chat_postEphemeral(channel="C1", user="U1", text="only you")
        client.views_publish(user_id="U1", view={"type": "home", "blocks": [section("dash")]})
        assert [e["text"] for e in fake.ephemerals(user="U1")] == ["only you"]
        assert fake.ephemerals(user="U2") == []
        assert fake.home("U1")["blocks"] == [section("dash")]

    def test_views_need_a_fresh_trigger(self, fake: FakeSlack, client: WebClient) -> None:
        """views.open works once per issued trigger_id; views.update and push change the user's stack."""
        modal = {"type": "modal", "title": {"type": "plain_text", "text": "Schedule"}, "blocks": [section("a")]}
        trigger = fake.issue_trigger_id("U1")
        view = client.views_open(trigger_id=trigger, view=modal)["view"]
        with pytest.raises(SlackApiError, match="exchanged_trigger_id"):
            client.views_open(trigger_id=trigger, view=modal)
        with pytest.raises(SlackApiError, match="invalid_trigger_id"):
            client.views_open(trigger_id="made-up", view=modal)
        client.views_update(view_id=view["id"], view={**modal, "blocks": [section("b")]})
        client.views_push(trigger_id=fake.issue_trigger_id("U1"), view=modal)
        stack = fake.modal_stack("U1")
        assert len(stack) == 2 and stack[0]["blocks"] == [section("b")] and view["id"] in fake.views


class TestFaultInjection:
    def test_rate_limit_is_retried_after_retry_after(self, fake: FakeSlack) -> None:
        """An injected 429 is waited out by RateLimitErrorRetryHandler; one failure then one success recorded."""
        fake.inject("chat.postMessage", status=429, retry_after=0)
        client = WebClient(token=fake.token, base_url=fake.base_url,
                           retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)])
        assert client.chat_postMessage(channel="C1", text="hi")["ok"]
        calls = fake.calls_to("chat.postMessage")
        assert [(c.status, c.injected) for c in calls] == [(429, True), (200, False)]
        assert len(fake.channel_messages("C1")) == 1

    def test_injected_failures_change_nothing(self, fake: FakeSlack, client: WebClient) -> None:
        """An injected API error and a 500 leave the message as it was, then calls succeed again."""
        ts = client.chat_postMessage(channel="C1", text="before")["ts"]
        fake.inject("chat.update", error="ratelimited")
        fake.inject("chat.update", status=500)
        with pytest.raises(SlackApiError, match="ratelimited"):
            client.chat_update(channel="C1", ts=ts, text="after")
        with pytest.raises(SlackApiError):
            client.chat_update(channel="C1", ts=ts, text="after")
        assert fake.message("C1", ts)["text"] == "before"
        client.chat_update(channel="C1", ts=ts, text="after")
        assert fake.message("C1", ts)["text"] == "after"
        assert [c.injected for c in fake.calls_to("chat.update")] == [True, True, False]

    def test_dropped_connection_and_delay(self, fake: FakeSlack) -> None:
        """A dropped connection is retried by ConnectionErrorRetryHandler; a delay-only fault just slows."""
        fake.inject("auth.test", disconnect=True)
        fake.inject("auth.test", status=200, delay_s=0.2)
        client = WebClient(token=fake.token, base_url=fake.base_url,
                           retry_handlers=[ConnectionErrorRetryHandler(max_retry_count=1)])
        started = time.monotonic()
        assert client.auth_test()["user_id"] == "U0BOT"
        assert time.monotonic() - started >= 0.2
        assert [c.status for c in fake.calls_to("auth.test")] == [0, 200]


class TestResponseUrl:
    def test_ephemeral_reply_is_recorded(self, fake: FakeSlack) -> None:
        """A JSON POST to a response_url with text shows up in ephemerals(user)."""
        url = fake.response_url(channel="C1", user="U1")
        reply = httpx.post(url, json={"text": "Only you can see this", "response_type": "ephemeral"})
        assert reply.status_code == 200
        assert [e["text"] for e in fake.ephemerals("U1")] == ["Only you can see this"]
        assert fake.calls_to("response_url")[0].args["text"] == "Only you can see this"

    def test_replace_original_and_in_channel(self, fake: FakeSlack, client: WebClient) -> None:
        """replace_original edits the clicked message; in_channel posts a new one."""
        ts = client.chat_postMessage(channel="C1", text="old", blocks=[section("old")])["ts"]
        url = fake.response_url(channel="C1", user="U1", message_ts=ts)
        httpx.post(url, json={"replace_original": True, "text": "new", "blocks": [section("new")]})
        httpx.post(url, json={"response_type": "in_channel", "text": "announced"})
        assert [m["text"] for m in fake.channel_messages("C1")] == ["new", "announced"]
        assert fake.message("C1", ts)["blocks"] == [section("new")]

    def test_unknown_url_and_use_limit(self, fake: FakeSlack) -> None:
        """An unknown response_url is 404; a known one works five times."""
        assert httpx.post(fake.root_url + "response/nope", json={"text": "x"}).status_code == 404
        url = fake.response_url(channel="C1", user="U1")
        codes = [httpx.post(url, json={"text": str(i)}).status_code for i in range(6)]
        assert codes == [200] * 5 + [404]


class TestFiles:
    def test_files_upload_v2_records_the_bytes(self, fake: FakeSlack, client: WebClient) -> None:
        """files_upload_v2 goes through the fake's upload URL and the file is recorded with its bytes."""
        parent = client.chat_postMessage(channel="C1", text="run")["ts"]
        client.files_upload_v2(content=b"\x89PNG-data", filename="x.png", channel="C1", thread_ts=parent,
                               title="Plan")
        [upload] = fake.files
        assert (upload.name, upload.title, upload.bytes, upload.channel, upload.thread_ts) == (
            "x.png", "Plan", b"\x89PNG-data", "C1", parent)
        assert fake.thread("C1", parent)[0]["files"][0]["name"] == "x.png"


class TestSlackSender:
    def test_signatures_verify(self, fake: FakeSlack, recorder: _Recorder) -> None:
        """Slash commands, clicks, submissions and events all carry a valid v0 signature."""
        sender = SlackSender(recorder.url, SECRET, fake=fake)
        message = {"ts": "1.000001", "blocks": [{"type": "actions", "block_id": "b",
                                                 "elements": [button("approve", "Approve", "run-1")]}]}
        sender.slash("U1", "prod", channel_id="C1")
        sender.click("U1", channel_id="C1", message=message, action_id="approve")
        sender.submit_view("U1", {"id": "V1", "callback_id": "cb"}, {"b": {"a": {"type": "plain_text_input",
                                                                             "value": "x"}}})
        sender.home_opened("U1")
        assert [valid for _h, _b, valid in recorder.requests] == [True] * 4
        form = parse_qs(recorder.requests[0][1].decode())
        assert form["command"] == ["/migrate"] and form["text"] == ["prod"]
        assert form["response_url"][0].startswith(fake.root_url + "response/")
        assert json.loads(recorder.requests[3][1])["event"]["type"] == "app_home_opened"

    def test_stale_timestamp_is_rejected(self, recorder: _Recorder) -> None:
        """A request signed with a ten-minute-old timestamp fails verification."""
        sender = SlackSender(recorder.url, SECRET)
        response = sender.slash("U1", "prod", channel_id="C1", timestamp=int(time.time()) - 600)
        headers, body, valid = recorder.requests[0]
        assert not valid and response.status_code == 401
        fresh = SignatureVerifier(SECRET, clock=_FixedClock(int(headers["x-slack-request-timestamp"])))
        assert fresh.is_valid_request(body, headers)  # the signature itself is right, only old

    def test_click_payload_shape(self, recorder: _Recorder) -> None:
        """A click carries the whole message, the container and the clicked button as the action."""
        sender = SlackSender(recorder.url, SECRET)
        message = {"ts": "1.000001", "text": "t", "blocks": [
            section("hi", "s1") | {"accessory": button("details", "Details", "d")},
            {"type": "actions", "block_id": "run-1:v2", "elements": [button("approve", "Approve", "run-1")]}]}
        sender.click("U1", channel_id="C1", message=message, action_id="approve")
        payload = json.loads(parse_qs(recorder.requests[0][1].decode())["payload"][0])
        assert payload["type"] == "block_actions" and payload["message"] == message
        assert payload["container"] == {"type": "message", "message_ts": "1.000001", "channel_id": "C1",
                                        "is_ephemeral": False}
        action = payload["actions"][0]
        assert (action["action_id"], action["block_id"], action["value"]) == ("approve", "run-1:v2", "run-1")
        assert [b.action_id for b in buttons(message)] == ["details", "approve"]
        with pytest.raises(ElementNotFound, match="details"):
            sender.click("U1", channel_id="C1", message=message, action_id="reject")


class _FixedClock:
    def __init__(self, now: int) -> None:
        self._now = now

    def now(self) -> float:
        return float(self._now)


# ---------------------------------------------------------------------- a real Bolt app behind the sender

MODAL = {"type": "modal", "callback_id": "reason_form", "title": {"type": "plain_text", "text": "Why?"},
         "submit": {"type": "plain_text", "text": "Send"},
         "blocks": [{"type": "input", "block_id": "reason", "label": {"type": "plain_text", "text": "Reason"},
                     "element": {"type": "plain_text_input", "action_id": "reason_input"}}]}


class _BoltServer:
    """A minimal slack_bolt App served over HTTP (http.server → App.dispatch) for end-to-end checks."""

    def __init__(self, fake: FakeSlack) -> None:
        from slack_bolt import App, BoltRequest

        app = App(client=WebClient(token=fake.token, base_url=fake.base_url), signing_secret=SECRET)
        runs = iter(range(1, 100))

        @app.command("/migrate")
        def command(ack: Any, command: dict[str, Any], say: Any, client: WebClient) -> None:
            if command["text"] == "why":
                ack()
                client.views_open(trigger_id=command["trigger_id"], view=MODAL)
                return
            if command["text"] == "windows":
                ack()
                say(text="Windows", blocks=[section("*Upcoming maintenance windows* (1)"), {
                    "type": "actions", "elements": [button("reschedule", "Reschedule", "w-1")]}])
                return
            if command["text"] == "files":
                ack()
                client.files_upload_v2(channel=command["channel_id"], filename="run-1-timeline.md",
                                       content=b"# Timeline of run-1\n\n| # | action |\n", title="Timeline run-1")
                client.files_upload_v2(channel=command["channel_id"], filename="run-1-watch.png",
                                       content=b"\x89PNG\r\n\x1a\n\x00\x00chart", title="Watch run-1")
                return
            run = f"run-{next(runs)}"
            ack(f"Starting `{command['text']}`")
            say(text="Run requested", blocks=[
                {"type": "header", "text": {"type": "plain_text", "text": f"Migration {run}"}},
                section(f"*Requested by* <@{command['user_id']}> at <!date^1700000000^{{time}}|12:00 UTC>"),
                {"type": "actions", "block_id": f"{run}:v1", "elements": [
                    button("approve", "Approve", run, style="primary", confirm=CONFIRM),
                    button("cancel", "Cancel", run), button("backup", "Take backup", run)]}])

        @app.action("backup")
        def backup(ack: Any, body: dict[str, Any], client: WebClient) -> None:
            """A step that starts late and runs long: longer silences than any quiet time."""
            ack()
            channel, ts = body["channel"]["id"], body["message"]["ts"]
            header = body["message"]["blocks"][0]

            def work() -> None:
                time.sleep(1.5)
                client.chat_update(channel=channel, ts=ts, text="Backing up",
                                   blocks=[header, section("⏳ Back up the database — running")])
                time.sleep(2.0)
                client.chat_update(channel=channel, ts=ts, text="Backed up",
                                   blocks=[header, section("✅ Back up the database — done")])

            threading.Thread(target=work, daemon=True).start()

        @app.event("app_home_opened")
        def home(event: dict[str, Any], client: WebClient) -> None:
            client.views_publish(user_id=event["user"], view={"type": "home", "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": "Active runs"}},
                section(f"run-1 · requested by <@{event['user']}>")]})

        @app.action("approve")
        def approve(ack: Any, body: dict[str, Any], client: WebClient) -> None:
            ack()
            client.chat_update(channel=body["channel"]["id"], ts=body["message"]["ts"], text="Approved",
                               blocks=[section(f"Approved by <@{body['user']['id']}>")])

        @app.view("reason_form")
        def reason(ack: Any, view: dict[str, Any], client: WebClient) -> None:
            value = view["state"]["values"]["reason"]["reason_input"]["value"]
            if not value:
                ack(response_action="errors", errors={"reason": "Please give a reason"})
                return
            ack()
            client.chat_postMessage(channel="C0PROD", text=f"Reason given: {value}")

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                headers = {k.lower(): [v] for k, v in self.headers.items()}
                response = app.dispatch(BoltRequest(body=body, headers=headers))
                raw = (response.body or "").encode()
                self.send_response(response.status)
                for name, values in response.headers.items():
                    for value in values:
                        if name.lower() != "content-length":
                            self.send_header(name, value)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/slack/events"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def bolt(fake: FakeSlack) -> Iterator[SlackSender]:
    fake.add_user("U0ALICE", "alice")
    fake.add_user("U0BOB", "bob")
    fake.add_channel("C0PROD", "prod-db")
    server = _BoltServer(fake)
    with SlackSender(server.url, SECRET, fake=fake) as sender:
        yield sender
    server.close()


class TestWithBolt:
    def test_slash_click_and_update_through_bolt(self, fake: FakeSlack, bolt: SlackSender) -> None:
        """A real Bolt app acks the command (shown as ephemeral), posts buttons and updates on click."""
        assert bolt.slash("U0ALICE", "prod", channel_id="C0PROD").status_code == 200
        message = fake.wait_for(lambda: next(iter(fake.channel_messages("C0PROD")), None))
        assert [e["text"] for e in fake.ephemerals("U0ALICE")] == ["Starting `prod`"]
        assert bolt.click("U0BOB", channel_id="C0PROD", message=message, action_id="approve").status_code == 200
        fake.wait_for(lambda: fake.calls_to("chat.update"))
        assert fake.channel_messages("C0PROD")[0]["text"] == "Approved"

    def test_bad_signature_is_refused_by_bolt(self, fake: FakeSlack, bolt: SlackSender) -> None:
        """Bolt answers 401 to a tampered signature and nothing is posted."""
        assert bolt.slash("U0ALICE", "prod", channel_id="C0PROD", signature="v0=deadbeef").status_code == 401
        assert fake.channel_messages("C0PROD") == []

    def test_view_submission_errors_keep_the_modal_open(self, fake: FakeSlack, bolt: SlackSender) -> None:
        """An errors ack keeps the modal open; a valid submission closes it."""
        bolt.slash("U0ALICE", "why", channel_id="C0PROD")
        view = fake.wait_for(lambda: fake.top_modal("U0ALICE"))
        empty = {"reason": {"reason_input": {"type": "plain_text_input", "value": None}}}
        assert bolt.submit_view("U0ALICE", view, empty).json()["errors"] == {"reason": "Please give a reason"}
        assert fake.top_modal("U0ALICE") is not None
        filled = {"reason": {"reason_input": {"type": "plain_text_input", "value": "hotfix"}}}
        bolt.submit_view("U0ALICE", view, filled)
        assert fake.top_modal("U0ALICE") is None
        fake.wait_for(lambda: fake.channel_messages("C0PROD"))


def run_console(fake: FakeSlack, sender: SlackSender, script: str, **options: Any) -> tuple[str, int]:
    """The console's output for a piped script, and its exit status."""
    out = io.StringIO()
    console = Console(fake, sender, channel_id="C0PROD", users=[("U0ALICE", "alice"), ("U0BOB", "bob")],
                      input=io.StringIO(script), output=out, quiet_s=0.3, **options)
    status = console.run()
    return out.getvalue(), status


class TestConsole:
    def _run(self, fake: FakeSlack, sender: SlackSender, script: str) -> str:
        text, status = run_console(fake, sender, script)
        assert status == 0, text
        return text

    def test_demo_session(self, fake: FakeSlack, bolt: SlackSender) -> None:
        """Slash command, rendered buttons, a confirmed click as another user, all in plain text."""
        text = self._run(fake, bolt, "/migrate prod\nuser bob\n1\ny\nquit\n")
        assert "only visible to you" in text and "Starting `prod`" in text
        assert "== Migration run-1 ==" in text
        assert "Requested by @alice at 12:00 UTC" in text
        assert "  [1] Approve\n  [2] Cancel" in text
        assert "┌ confirm dialog: Approve prod?\n  │ This runs the migration on prod.\n  └ [Approve] or [Cancel]?" in text
        assert "Approved by @bob" in text
        assert "\x1b[" not in text

    def test_a_confirm_dialog_can_be_declined(self, fake: FakeSlack, bolt: SlackSender) -> None:
        """`n` to a confirm dialog sends nothing, as the dialog's deny button; `click!` accepts without asking."""
        text = self._run(fake, bolt, "/migrate prod\nuser bob\nclick approve\nn  # not yet\n")
        assert "[Cancel] pressed: nothing was sent to the bot" in text
        assert fake.calls_to("chat.update") == [] and "Approved by" not in text
        text = self._run(fake, bolt, "user bob\nclick! approve\n")
        assert "[Approve] pressed (click! accepts without asking)" in text and "Approved by @bob" in text

    def test_an_earlier_messages_buttons_can_be_clicked(self, fake: FakeSlack, bolt: SlackSender) -> None:
        """Buttons of older messages still work, and `show` brings a run's message back with its buttons."""
        text = self._run(fake, bolt, "/migrate prod\n/migrate staging\n/migrate windows\nuser bob\n"
                                     "click! approve\nshow run-1\n1!\n")
        assert "  [1] Reschedule" in text  # the newest message with buttons is the one listed
        run1, run2, windows = fake.channel_messages("C0PROD")
        assert f"clicking (on the earlier message {run2['ts'][-6:]}) Approve" in text  # the newest that has one
        shown = text[text.index("run run-1 as it is now"):]
        assert "== Migration run-1 ==" in shown and "  [1] Approve\n  [2] Cancel\n  [3] Take backup" in shown
        assert [c.args["ts"] for c in fake.calls_to("chat.update")] == [run2["ts"], run1["ts"]]
        assert [run1["text"], run2["text"], windows["text"]] == ["Approved", "Approved", "Windows"]

    def test_wait_waits_for_a_running_step(self, fake: FakeSlack, bolt: SlackSender) -> None:
        """`wait` waits for a step that starts after more than a quiet time and runs through long silences."""
        text = self._run(fake, bolt, "/migrate prod\nclick take backup\nwait\nuser bob\n")
        assert "  … ⏳ Back up the database — running" in text  # what is at work, while it waits
        assert text.index("✅ Back up the database — done") < text.index("now acting as @bob")

    def test_wait_gives_up_at_its_deadline(self, fake: FakeSlack, client: WebClient) -> None:
        """A step still running at the deadline is a failed line, named in the report."""
        fake.add_channel("C0PROD", "prod-db")
        client.chat_postMessage(channel="C0PROD", text="run", blocks=[
            {"type": "header", "text": {"type": "plain_text", "text": "Migration run-9 · prod"}},
            section("🔵 Running"), section("⏳ Apply Prisma migrations — running")])
        sender = SlackSender("http://127.0.0.1:9/unused", SECRET, fake=fake)
        text, status = run_console(fake, sender, "wait 1.5\n")
        assert "  … ⏳ Apply Prisma migrations — running" in text
        assert "! gave up waiting after 1.5 s: ⏳ Apply Prisma migrations — running" in text
        assert status == 1

    def test_a_mistyped_slash_command_does_not_exist(self, fake: FakeSlack, bolt: SlackSender) -> None:
        """As in Slack: `/migrat` is not a valid command, nothing reaches the bot, and a piped script fails."""
        text, status = run_console(fake, bolt, "/migrat prod\n")
        assert ("! /migrat is not a valid command. In Slack, all messages that start with the \"/\" character are "
                "interpreted as commands. Did you mean /migrate?") in text
        assert fake.channel_messages("C0PROD") == [] and fake.ephemerals() == []
        assert status == 1

    def test_failed_lines_make_a_piped_script_exit_non_zero(self, fake: FakeSlack, bolt: SlackSender) -> None:
        """Every failing line is reported where it happens and again at the end; the exit status is 1."""
        text, status = run_console(fake, bolt, "# a comment\n/migrate prod\nclick nothing\n7\nuser carol\nfly\n")
        assert status == 1
        assert "! no button matches 'nothing'" in text and "! pick a button between 1 and 3" in text
        assert "! 4 line(s) of the input failed:" in text
        assert "!   line 3: 'click nothing': no button matches 'nothing'" in text
        assert "!   line 6: 'fly': unknown command 'fly'; type `help`" in text

    def test_files_and_the_app_home_can_be_viewed(self, fake: FakeSlack, bolt: SlackSender, tmp_path: Path) -> None:
        """`files` lists uploads, `file <n>` prints text and saves binaries, `home` opens the App Home."""
        text, status = run_console(fake, bolt, "/migrate files\nfiles\nfile 1\nfile 2\nhome\n",
                                   files_dir=tmp_path)
        assert status == 0, text
        assert "[file 1] run-1-timeline.md (" in text and "`file 1` shows it" in text
        assert "  [1] run-1-timeline.md “Timeline run-1” — 36 bytes, in #prod-db" in text
        assert "  [2] run-1-watch.png “Watch run-1”" in text
        assert "│ # Timeline of run-1" in text
        assert f"└ a PNG image of 15 bytes, saved as {tmp_path / 'run-1-watch.png'}" in text
        assert (tmp_path / "run-1-watch.png").read_bytes().startswith(b"\x89PNG")
        assert "┌ App Home of @alice\n│ == Active runs ==\n│ run-1 · requested by @alice\n└" in text

    def test_modal_is_prompted_and_submitted(self, fake: FakeSlack, bolt: SlackSender) -> None:
        """A modal opened by the bot is asked field by field, errors are shown and it is resubmitted."""
        text = self._run(fake, bolt, "/migrate why\n\nhotfix for INC-7\nquit\n")
        assert "modal: Why?" in text
        assert "! reason: Please give a reason" in text
        assert "Reason given: hotfix for INC-7" in text
        assert fake.top_modal("U0ALICE") is None

    def test_mrkdwn_and_threads_render_plainly(self, fake: FakeSlack, client: WebClient) -> None:
        """Mentions, dates, links and emphasis become plain text; thread replies are labelled as such."""
        fake.add_user("U0ALICE", "alice")
        fake.add_usergroup("S0DBA", "dba", ["U0ALICE"])
        fake.add_channel("C0PROD", "prod-db")
        parent = client.chat_postMessage(channel="C0PROD", text="Run *started* by <@U0ALICE> cc <!subteam^S0DBA>")
        client.chat_postMessage(channel="C0PROD", thread_ts=parent["ts"],
                                text="step 1 done at <!date^1700000000^{time}|22:13>, see <https://x.io/p|the plan>")
        sender = SlackSender("http://127.0.0.1:9/unused", SECRET, fake=fake)
        text = self._run(fake, sender, "quit\n")
        assert "Run started by @alice cc @dba" in text
        assert f"[#prod-db thread {parent['ts'][-6:]}]" in text
        assert "step 1 done at 22:13, see the plan" in text
