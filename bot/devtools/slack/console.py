"""Console: a plain-text terminal front-end over FakeSlack + SlackSender, for trying the bot without Slack."""

from __future__ import annotations

import html
import json
import re
import time
from typing import Any, TextIO

from bot.devtools.slack.blockkit import iter_elements, text_of
from bot.devtools.slack.client import Button, SlackSender, buttons
from bot.devtools.slack.server import FakeSlack

HELP = """commands:
  /migrate <args>     send a slash command as the current user (any /command works)
  <n>                 click button [n] of the latest message with buttons
  click <words>       click the first button whose label contains <words> (stable in scripts)
  user <n|name|id>    act as another user;  users  lists them
  wait                wait until the bot has been quiet for ~1 s and shows no ⏳, then show what changed
  help                this text;  quit  leaves (so does end of input)"""

_MENTION = re.compile(r"<([@#!])([^>|]*)(?:\|([^>]*))?>")
_LINK = re.compile(r"<((?:https?|mailto):[^>|]+)(?:\|([^>]*))?>")
_EMPHASIS = re.compile(r"(?<![\w*_~])([*_~])(?=\S)(.+?)(?<=\S)\1(?![\w*_~])")


class Console:
    """Reads commands from `input`, drives the bot through `sender`, prints what Slack would show."""

    def __init__(self, fake: FakeSlack, sender: SlackSender, *, channel_id: str, users: list[tuple[str, str]],
                 input: TextIO, output: TextIO, quiet_s: float = 0.3,  # noqa: A002 - name from the brief
                 settle_timeout_s: float = 5.0) -> None:
        if not users:
            raise ValueError("Console needs at least one user")
        self.fake = fake
        self.sender = sender
        self.channel_id = channel_id
        self.users = list(users)
        self.current = self.users[0][0]
        self.input = input
        self.output = output
        self.quiet_s = quiet_s
        self.settle_timeout_s = settle_timeout_s
        self._seen: dict[tuple[str, str], str] = {}
        self._seen_ephemerals: dict[str, str] = {}
        self._modal_seen: set[tuple[str, str]] = set()
        self._buttons: list[tuple[Button, dict[str, Any], str, bool]] = []
        self._last_button_line = ""
        self._echo = not _isatty(input)
        self._eof = False
        for user_id, name in self.users:
            if fake.user_name(user_id) is None:
                fake.add_user(user_id, name)

    # ------------------------------------------------------------------ loop

    def run(self) -> None:
        """Render, prompt, act — until `quit` or end of input."""
        self._print(f"devslack console: channel {self._channel_label(self.channel_id)}, "
                    f"acting as @{self._name(self.current)}. Type `help` for commands.")
        while not self._eof:
            self.render()
            line = self._readline(f"{self._name(self.current)}> ")
            if line is None:
                break
            line = line.strip()
            if not line:
                continue
            if line in ("quit", "exit"):
                break
            try:
                self.execute(line)
            except Exception as exc:  # keep the demo alive; show the problem in one line
                self._print(f"! {type(exc).__name__}: {exc}")
        self.render()

    def execute(self, line: str) -> None:
        """Run one command line (see HELP)."""
        if line.startswith("/"):
            command, _, text = line.partition(" ")
            self._act(lambda: self.sender.slash(self.current, text.strip(), channel_id=self.channel_id,
                                                command=command))
        elif line.isdigit():
            self._click(int(line))
        elif line.startswith("click "):
            self._click_matching(line[6:].strip())
        elif line == "users":
            for i, (user_id, name) in enumerate(self.users, 1):
                mark = "*" if user_id == self.current else " "
                self._print(f" {mark}{i}. @{name} ({user_id})")
        elif line.startswith("user ") or line == "user":
            self._switch_user(line[5:].strip())
        elif line == "wait":
            self._wait_for_the_bot()
        elif line in ("help", "?"):
            self._print(HELP)
        else:
            self._print(f"unknown command {line!r}; type `help`")

    def _wait_for_the_bot(self, timeout_s: float = 180) -> None:
        """Until the bot has been quiet for ~1 s and no message in the channel shows work in progress (⏳)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.fake.wait_idle(quiet_s=1.0, timeout=30)
            if not any("⏳" in json.dumps(m.get("blocks") or [], ensure_ascii=False)
                       for m in self.fake.channel_messages(self.channel_id)):
                return
            time.sleep(0.2)

    # ------------------------------------------------------------------ actions

    def _switch_user(self, arg: str) -> None:
        wanted = arg.lstrip("@").lower()
        for i, (user_id, name) in enumerate(self.users, 1):
            if wanted in (str(i), user_id.lower(), name.lower()):
                self.current = user_id
                self._last_button_line = ""
                self._print(f"now acting as @{name} ({user_id})")
                return
        self._print(f"no user {arg!r}; `users` lists them")

    def _click(self, number: int) -> None:
        if not self._buttons:
            self._print("there are no buttons to click")
            return
        if not 1 <= number <= len(self._buttons):
            self._print(f"pick a button between 1 and {len(self._buttons)}")
            return
        button, message, channel, ephemeral = self._buttons[number - 1]
        self._print(f"clicking [{number}] {button.text}")
        if button.confirm:
            confirm = button.confirm
            self._print(f"  confirm dialog: {text_of(confirm.get('title'))} - "
                        f"{self.plain(text_of(confirm.get('text')))}")
            self._print(f"  ({text_of(confirm.get('confirm')) or 'Confirm'} pressed: treated as confirmed)")
        self._act(lambda: self.sender.click(self.current, channel_id=channel, message=message,
                                            action_id=button.action_id, is_ephemeral=ephemeral))

    def _click_matching(self, words: str) -> None:
        self._refresh_buttons()
        wanted = words.lower()
        for number, (button, message, *_rest) in enumerate(self._buttons, 1):
            if wanted in self._label(button, message).lower():
                self._click(number)
                return
        self._print(f"no button matches {words!r}")

    def _label(self, button: Button, message: dict[str, Any]) -> str:
        """The button's text, plus the text of the section it sits in (so 'Confirm' says what it confirms)."""
        for block in message.get("blocks") or []:
            accessory = block.get("accessory") or {}
            if block.get("type") == "section" and accessory.get("action_id") == button.action_id:
                context = self.plain(text_of(block.get("text"))).lstrip("⬜❌⚠️ ").split(" — ")[0]
                return f"{button.text}: {context[:60]}"
        return button.text

    def _act(self, send: Any) -> None:
        started = time.time()
        response = send()
        if response.status_code != 200:
            self._print(f"! the bot answered HTTP {response.status_code}: {response.text[:200]}")
        self._settle(started)
        self._handle_modals()

    def _settle(self, since: float) -> None:
        self.fake.wait_idle(quiet_s=self.quiet_s, timeout=self.settle_timeout_s, since=since)

    # ------------------------------------------------------------------ modals

    def _handle_modals(self) -> None:
        for _ in range(10):  # a bound against a bot that keeps answering with new views
            view = self.fake.top_modal(self.current)
            if view is None or (view["id"], view["hash"]) in self._modal_seen or self._eof:
                return
            self._modal_seen.add((view["id"], view["hash"]))
            self.render()
            values = self._ask_modal(view)
            if values is None:
                self.fake.dismiss_modals(self.current)
                self._print("(modal closed without submitting)")
                return
            started = time.time()
            response = self.sender.submit_view(self.current, view, values)
            body: Any = None
            if response.content:
                try:
                    body = response.json()
                except ValueError:
                    body = None
            if response.status_code != 200:
                self._print(f"! the bot answered HTTP {response.status_code}: {response.text[:200]}")
            elif isinstance(body, dict) and body.get("response_action") == "errors":
                for block_id, message in (body.get("errors") or {}).items():
                    self._print(f"  ! {block_id}: {message}")
                self._modal_seen.discard((view["id"], view["hash"]))  # ask again
            self._settle(started)

    def _ask_modal(self, view: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]] | None:
        """Prompt for every input of the modal; None when the user typed `cancel` or input ended."""
        title = text_of(view.get("title"))
        self._print(f"┌ modal: {title}   (answer each field; `cancel` closes the modal)")
        values: dict[str, dict[str, dict[str, Any]]] = {}
        for block in view.get("blocks") or []:
            if block.get("type") != "input":
                for line in self._block_lines(block):
                    self._print(f"│ {line}")
                continue
            element = block.get("element") or {}
            label = text_of(block.get("label"))
            if block.get("optional"):
                label += " (optional)"
            answer = self._ask_element(label, element, block)
            if answer is None:
                return None
            block_id = block.get("block_id") or ""
            values.setdefault(block_id, {})[element.get("action_id") or ""] = answer
        submit = text_of(view.get("submit")) or "Submit"
        self._print(f"└ [{submit}]")
        return values

    def _ask_element(self, label: str, element: dict[str, Any], block: dict[str, Any]) -> dict[str, Any] | None:
        kind = str(element.get("type") or "plain_text_input")
        options = element.get("options") or [o for g in element.get("option_groups") or []
                                             for o in g.get("options") or []]
        if block.get("hint"):
            self._print(f"│ ({text_of(block['hint'])})")
        if options:
            for i, option in enumerate(options, 1):
                self._print(f"│   {i}) {text_of(option.get('text'))}")
        default = _initial(element)
        prompt = f"{label}{f' [{default}]' if default else ''}: "
        raw = self._readline(prompt)
        if raw is None:
            self._eof = True
            return None
        raw = raw.strip()
        if raw == "cancel":
            return None
        if not raw:
            raw = default
        result: dict[str, Any] = {"type": kind}
        if kind in ("static_select", "radio_buttons", "external_select"):
            result["selected_option"] = _pick(options, raw)
        elif kind in ("checkboxes", "multi_static_select", "multi_external_select"):
            picked = [_pick(options, part.strip()) for part in raw.split(",") if part.strip()]
            result["selected_options"] = [p for p in picked if p]
        elif kind == "users_select":
            result["selected_user"] = self._user_id(raw) if raw else None
        elif kind == "multi_users_select":
            result["selected_users"] = [self._user_id(p.strip()) for p in raw.split(",") if p.strip()]
        elif kind in ("conversations_select", "channels_select"):
            key = "selected_conversation" if kind == "conversations_select" else "selected_channel"
            result[key] = raw or None
        elif kind in ("multi_conversations_select", "multi_channels_select"):
            key = "selected_conversations" if kind == "multi_conversations_select" else "selected_channels"
            result[key] = [p.strip() for p in raw.split(",") if p.strip()]
        elif kind == "datepicker":
            result["selected_date"] = raw or None
        elif kind == "timepicker":
            result["selected_time"] = raw or None
            if element.get("timezone"):
                result["timezone"] = element["timezone"]
        elif kind == "datetimepicker":
            result["selected_date_time"] = int(raw) if raw.isdigit() else None
        else:
            result["value"] = raw or None
        return result

    def _user_id(self, text: str) -> str:
        wanted = text.lstrip("@").lower()
        for i, (user_id, name) in enumerate(self.users, 1):
            if wanted in (str(i), user_id.lower(), name.lower()):
                return user_id
        return text

    # ------------------------------------------------------------------ rendering

    def render(self) -> None:
        """Print new/changed messages and new ephemerals for the current user, then the button list."""
        printed = False
        items: list[tuple[tuple[int, int], str, dict[str, Any], bool]] = [
            (_ts_key(m["ts"]), ch, m, False) for ch, m in self.fake.all_messages()]
        items += [(_ts_key(e["ts"]), e.get("channel") or "", e, True) for e in self.fake.ephemerals(user=self.current)]
        items.sort(key=lambda item: item[0])
        for _key, channel, msg, ephemeral in items:
            fingerprint = _fingerprint(msg)
            where = self._channel_label(channel) if channel else "?"
            if ephemeral:
                if self._seen_ephemerals.get(msg["ts"]) == fingerprint:
                    continue
                self._seen_ephemerals[msg["ts"]] = fingerprint
                self._print_message(f"[{where}] only visible to you:", msg)
                printed = True
                continue
            key = (channel, msg["ts"])
            previous = self._seen.get(key)
            if previous == fingerprint:
                continue
            self._seen[key] = fingerprint
            tag = "new" if previous is None else "updated"
            if msg.get("thread_ts") and msg["thread_ts"] != msg["ts"]:
                where += f" thread {msg['thread_ts'][-6:]}"
            self._print_message(f"[{where}] @{self._name(msg.get('user', ''))} ({tag}, {msg['ts'][-6:]})", msg)
            printed = True
        self._refresh_buttons()
        line = "\n".join(f"  [{i}] {self._label(b, msg)}" for i, (b, msg, *_rest) in enumerate(self._buttons, 1))
        if line and (printed or line != self._last_button_line):
            self._print(line)
        self._last_button_line = line

    def _refresh_buttons(self) -> None:
        candidates: list[tuple[str, dict[str, Any], str, bool]] = [
            (m["ts"], m, ch, False) for ch, m in self.fake.all_messages()]
        candidates += [(e["ts"], e, e.get("channel") or self.channel_id, True)
                       for e in self.fake.ephemerals(user=self.current)]
        candidates.sort(key=lambda c: _ts_key(c[0]))
        self._buttons = []
        for _ts, msg, channel, ephemeral in reversed(candidates):
            found = buttons(msg)
            if found:
                self._buttons = [(b, msg, channel, ephemeral) for b in found]
                return

    def _print_message(self, heading: str, msg: dict[str, Any]) -> None:
        self._print(heading)
        lines: list[str] = []
        for block in msg.get("blocks") or []:
            lines.extend(self._block_lines(block))
        if not lines and msg.get("text"):
            lines = self.plain(msg["text"]).splitlines()
        for file in msg.get("files") or []:
            lines.append(f"[file] {file.get('name')} ({file.get('size', '?')} bytes)")
        for reaction in msg.get("reactions") or []:
            lines.append(f":{reaction['name']}: {reaction['count']}")
        for line in lines:
            self._print(f"    {line}")

    def _block_lines(self, block: dict[str, Any]) -> list[str]:
        kind = block.get("type")
        lines: list[str] = []
        if kind == "header":
            lines.append(f"== {self.plain(text_of(block.get('text')))} ==")
        elif kind == "section":
            if block.get("text"):
                lines.extend(self.plain(text_of(block["text"])).splitlines())
            fields = [self.plain(text_of(f)).replace("\n", " ") for f in block.get("fields") or []]
            if fields:
                lines.append(" | ".join(fields))
        elif kind == "context":
            parts = [self.plain(text_of(e)) if e.get("type") != "image" else f"[{e.get('alt_text', 'image')}]"
                     for e in block.get("elements") or []]
            lines.append(" · ".join(p for p in parts if p))
        elif kind == "markdown":
            lines.extend(self.plain(str(block.get("text", ""))).splitlines())
        elif kind == "divider":
            lines.append("-" * 20)
        elif kind == "rich_text":
            lines.extend(self.plain(_rich_text(block)).splitlines())
        elif kind == "image":
            lines.append(f"[image: {block.get('alt_text', '')}]")
        elif kind == "input":
            lines.append(f"{text_of(block.get('label'))}: ...")
        controls = [f"[{text_of(e.get('text')) or e.get('type')}]" for e in iter_elements(block)
                    if kind != "input"]
        if controls:
            lines.append(" ".join(controls))
        return lines

    def plain(self, text: str) -> str:
        """Slack mrkdwn → plain text: mentions as @name/#name, dates as their fallback, no emphasis marks."""
        def mention(match: re.Match[str]) -> str:
            sigil, body, label = match.group(1), match.group(2), match.group(3)
            if sigil == "@":
                return "@" + (label or self._name(body))
            if sigil == "#":
                return "#" + (label or self.fake.channel_name(body) or body)
            if body.startswith("subteam^"):
                group = body.split("^", 1)[1]
                return label or "@" + (self.fake.usergroup_handle(group) or group)
            if body.startswith("date^"):
                return label or body
            return label or "@" + body  # <!here>, <!channel>
        text = _LINK.sub(lambda m: m.group(2) or m.group(1), text)
        text = _MENTION.sub(mention, text)
        text = _EMPHASIS.sub(r"\2", text)
        return html.unescape(text)

    def _name(self, user_id: str) -> str:
        for uid, name in self.users:
            if uid == user_id:
                return name
        return self.fake.user_name(user_id) or user_id

    def _channel_label(self, channel_id: str) -> str:
        name = self.fake.channel_name(channel_id)
        return f"#{name}" if name else channel_id

    # ------------------------------------------------------------------ io

    def _print(self, text: str) -> None:
        self.output.write(text + "\n")
        self.output.flush()

    def _readline(self, prompt: str) -> str | None:
        self.output.write(prompt)
        self.output.flush()
        line = self.input.readline()
        if not line:
            self.output.write("\n")
            self._eof = True
            return None
        if self._echo:
            self.output.write(line if line.endswith("\n") else line + "\n")
        return line.rstrip("\n")


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _ts_key(ts: str) -> tuple[int, int]:
    seconds, _, fraction = ts.partition(".")
    return int(seconds), int(fraction or 0)


def _fingerprint(msg: dict[str, Any]) -> str:
    keys = ("text", "blocks", "files", "reactions", "attachments")
    return json.dumps({k: msg.get(k) for k in keys}, sort_keys=True, default=str)


def _initial(element: dict[str, Any]) -> str:
    for key in ("initial_value", "initial_date", "initial_time", "initial_user", "initial_conversation",
                "initial_channel", "initial_date_time"):
        if element.get(key) not in (None, ""):
            return str(element[key])
    option = element.get("initial_option")
    if isinstance(option, dict):
        return text_of(option.get("text"))
    return ""


def _pick(options: list[dict[str, Any]], answer: str) -> dict[str, Any] | None:
    if not answer:
        return None
    if answer.isdigit() and 1 <= int(answer) <= len(options):
        return options[int(answer) - 1]
    lowered = answer.lower()
    for option in options:
        if lowered in (str(option.get("value", "")).lower(), text_of(option.get("text")).lower()):
            return option
    return None


def _rich_text(node: Any) -> str:
    if isinstance(node, dict):
        if node.get("type") == "text":
            return str(node.get("text", ""))
        if node.get("type") == "user":
            return f"<@{node.get('user_id')}>"
        if node.get("type") == "link":
            return str(node.get("text") or node.get("url", ""))
        inner = "".join(_rich_text(e) for e in node.get("elements") or [])
        return inner + ("\n" if node.get("type") in ("rich_text_section", "rich_text_preformatted") else "")
    return ""
