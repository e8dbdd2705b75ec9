"""Block Kit limit checks (the numbers Slack enforces), as pure functions returning readable errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

Surface = Literal["message", "modal", "home"]

MAX_BLOCKS = {"message": 50, "modal": 100, "home": 100}
MAX_BLOCK_ID = 255
MAX_ACTION_ID = 255
MAX_SECTION_TEXT = 3000
MAX_SECTION_FIELDS = 10
MAX_SECTION_FIELD_TEXT = 2000
MAX_HEADER_TEXT = 150
MAX_MARKDOWN_TEXT = 12000
MAX_CONTEXT_ELEMENTS = 10
MAX_ACTIONS_ELEMENTS = 25
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_BUTTON_URL = 3000
MAX_CONFIRM_TITLE = 100
MAX_CONFIRM_TEXT = 300
MAX_CONFIRM_BUTTON = 30
MAX_OPTION_TEXT = 75
MAX_OPTION_VALUE = 150
MAX_OPTIONS = 100
MAX_PLACEHOLDER = 150
MAX_INPUT_LABEL = 2000
MAX_INPUT_HINT = 2000
MAX_VIEW_TITLE = 24
MAX_VIEW_BUTTON = 24
MAX_PRIVATE_METADATA = 3000
MAX_CALLBACK_ID = 255
MAX_MESSAGE_UPDATE_TEXT = 4000

BLOCK_TYPES = {
    "actions", "context", "divider", "file", "header", "image", "input", "markdown", "rich_text",
    "section", "video", "context_actions", "table",
}
BUTTON_STYLES = {"primary", "danger"}


def text_of(obj: Any) -> str:
    """The string inside a text object (`{"type": "mrkdwn", "text": ...}`), or the string itself."""
    if isinstance(obj, str):
        return obj
    if isinstance(obj, dict):
        value = obj.get("text")
        return value if isinstance(value, str) else ""
    return ""


def iter_elements(block: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Interactive elements a block holds: actions' elements, a section's accessory, an input's element."""
    if block.get("type") == "actions":
        for element in block.get("elements") or []:
            if isinstance(element, dict):
                yield element
    accessory = block.get("accessory")
    if isinstance(accessory, dict):
        yield accessory
    element = block.get("element")
    if block.get("type") == "input" and isinstance(element, dict):
        yield element


class _Validator:
    """Collects errors while walking one surface's blocks."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.block_ids: dict[str, str] = {}
        self.action_ids: dict[str, str] = {}

    def too_long(self, where: str, what: str, value: Any, limit: int) -> None:
        if isinstance(value, str) and len(value) > limit:
            self.errors.append(f"{where}: {what} is {len(value)} characters; the limit is {limit}")

    def unique_id(self, where: str, what: str, value: Any, limit: int, seen: dict[str, str]) -> None:
        """An optional ``block_id`` or ``action_id``: a non-empty string within ``limit``, unique on the surface."""
        if value is None:
            return
        if not isinstance(value, str) or not value:
            self.errors.append(f"{where}: {what} must be a non-empty string")
            return
        self.too_long(where, what, value, limit)
        if value in seen:
            self.errors.append(f"{where}: {what} {value!r} is already used at {seen[value]}; {what}s must be unique")
        else:
            seen[value] = where

    def text_object(self, where: str, what: str, obj: Any, limit: int, *, plain_only: bool = False) -> None:
        if obj is None:
            return
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            self.errors.append(f"{where}: {what} must be a text object with a string `text`")
            return
        kind = obj.get("type")
        if kind not in ("plain_text", "mrkdwn"):
            self.errors.append(f"{where}: {what} has text type {kind!r}; expected plain_text or mrkdwn")
        elif plain_only and kind != "plain_text":
            self.errors.append(f"{where}: {what} must be plain_text, not {kind}")
        self.too_long(where, what, obj["text"], limit)

    def confirm(self, where: str, confirm: Any) -> None:
        if confirm is None:
            return
        if not isinstance(confirm, dict):
            self.errors.append(f"{where}: confirm must be an object")
            return
        for key, limit in (("title", MAX_CONFIRM_TITLE), ("text", MAX_CONFIRM_TEXT),
                           ("confirm", MAX_CONFIRM_BUTTON), ("deny", MAX_CONFIRM_BUTTON)):
            if key not in confirm:
                self.errors.append(f"{where}: confirm.{key} is required")
                continue
            self.text_object(where, f"confirm.{key}", confirm[key], limit, plain_only=key != "text")
        style = confirm.get("style")
        if style is not None and style not in BUTTON_STYLES:
            self.errors.append(f"{where}: confirm.style {style!r} is not primary or danger")

    def options(self, where: str, options: Any) -> None:
        if options is None:
            return
        if not isinstance(options, list):
            self.errors.append(f"{where}: options must be a list")
            return
        if len(options) > MAX_OPTIONS:
            self.errors.append(f"{where}: {len(options)} options; the limit is {MAX_OPTIONS}")
        for j, option in enumerate(options):
            if not isinstance(option, dict):
                self.errors.append(f"{where}: options[{j}] must be an object")
                continue
            self.text_object(where, f"options[{j}].text", option.get("text"), MAX_OPTION_TEXT)
            self.too_long(where, f"options[{j}].value", option.get("value"), MAX_OPTION_VALUE)

    def element(self, where: str, element: dict[str, Any]) -> None:
        kind = element.get("type")
        where = f"{where} ({kind})"
        self.unique_id(where, "action_id", element.get("action_id"), MAX_ACTION_ID, self.action_ids)
        if kind == "button":
            if "text" not in element:
                self.errors.append(f"{where}: button text is required")
            self.text_object(where, "text", element.get("text"), MAX_BUTTON_TEXT, plain_only=True)
            self.too_long(where, "value", element.get("value"), MAX_BUTTON_VALUE)
            self.too_long(where, "url", element.get("url"), MAX_BUTTON_URL)
            style = element.get("style")
            if style is not None and style not in BUTTON_STYLES:
                self.errors.append(f"{where}: style {style!r} is not primary or danger")
        self.confirm(where, element.get("confirm"))
        self.text_object(where, "placeholder", element.get("placeholder"), MAX_PLACEHOLDER, plain_only=True)
        self.options(where, element.get("options"))
        for g, group in enumerate(element.get("option_groups") or []):
            if isinstance(group, dict):
                self.options(f"{where} option_groups[{g}]", group.get("options"))

    def block(self, where: str, block: Any) -> None:
        if not isinstance(block, dict):
            self.errors.append(f"{where}: a block must be an object")
            return
        kind = block.get("type")
        if not isinstance(kind, str) or kind not in BLOCK_TYPES:
            self.errors.append(f"{where}: unknown block type {kind!r}")
            return
        where = f"{where} ({kind})"
        self.unique_id(where, "block_id", block.get("block_id"), MAX_BLOCK_ID, self.block_ids)
        if kind == "section":
            fields = block.get("fields")
            if "text" not in block and not fields:
                self.errors.append(f"{where}: a section needs text or fields")
            self.text_object(where, "text", block.get("text"), MAX_SECTION_TEXT)
            if fields is not None:
                if not isinstance(fields, list):
                    self.errors.append(f"{where}: fields must be a list")
                else:
                    if len(fields) > MAX_SECTION_FIELDS:
                        self.errors.append(
                            f"{where}: {len(fields)} fields; the limit is {MAX_SECTION_FIELDS}")
                    for j, field in enumerate(fields):
                        self.text_object(where, f"fields[{j}]", field, MAX_SECTION_FIELD_TEXT)
        elif kind == "header":
            if "text" not in block:
                self.errors.append(f"{where}: header text is required")
            self.text_object(where, "text", block.get("text"), MAX_HEADER_TEXT, plain_only=True)
        elif kind == "markdown":
            self.too_long(where, "text", block.get("text"), MAX_MARKDOWN_TEXT)
        elif kind in ("context", "actions"):
            limit = MAX_CONTEXT_ELEMENTS if kind == "context" else MAX_ACTIONS_ELEMENTS
            elements = block.get("elements")
            if not isinstance(elements, list) or not elements:
                self.errors.append(f"{where}: {kind} needs a non-empty elements list")
            elif len(elements) > limit:
                self.errors.append(f"{where}: {len(elements)} elements; the limit is {limit}")
        elif kind == "input":
            if "label" not in block:
                self.errors.append(f"{where}: input label is required")
            if not isinstance(block.get("element"), dict):
                self.errors.append(f"{where}: input element is required")
            self.text_object(where, "label", block.get("label"), MAX_INPUT_LABEL, plain_only=True)
            self.text_object(where, "hint", block.get("hint"), MAX_INPUT_HINT, plain_only=True)
        for j, element in enumerate(iter_elements(block)):
            self.element(f"{where} element {j}", element)


def validate_blocks(blocks: Any, *, surface: Surface = "message") -> list[str]:
    """Every Block Kit limit `blocks` breaks on the given surface, as readable sentences ([] when valid)."""
    if surface not in MAX_BLOCKS:
        raise ValueError(f"unknown surface {surface!r}")
    if not isinstance(blocks, list):
        return ["blocks must be a list"]
    validator = _Validator()
    limit = MAX_BLOCKS[surface]
    if len(blocks) > limit:
        validator.errors.append(f"{len(blocks)} blocks; a {surface} allows at most {limit}")
    for i, block in enumerate(blocks):
        validator.block(f"blocks[{i}]", block)
    return validator.errors


def validate_view(view: Any, *, include_blocks: bool = True) -> list[str]:
    """Every limit a modal or Home tab view breaks: title/submit/close, private_metadata, and its blocks."""
    if not isinstance(view, dict):
        return ["view must be an object"]
    kind = view.get("type")
    if kind not in ("modal", "home"):
        return [f"view type {kind!r} is not modal or home"]
    errors: list[str] = []
    if kind == "modal":
        if "title" not in view:
            errors.append("view: a modal needs a title")
        for key in ("title", "submit", "close"):
            value = view.get(key)
            if value is None:
                continue
            if not isinstance(value, dict) or value.get("type") != "plain_text":
                errors.append(f"view: {key} must be a plain_text object")
                continue
            text = text_of(value)
            if len(text) > MAX_VIEW_TITLE:
                errors.append(f"view: {key} is {len(text)} characters; the limit is {MAX_VIEW_BUTTON}")
        has_input = any(isinstance(b, dict) and b.get("type") == "input" for b in view.get("blocks") or [])
        if has_input and "submit" not in view:
            errors.append("view: a modal with input blocks needs a submit button")
    metadata = view.get("private_metadata")
    if metadata is not None:
        if not isinstance(metadata, str):
            errors.append("view: private_metadata must be a string")
        elif len(metadata) > MAX_PRIVATE_METADATA:
            errors.append(
                f"view: private_metadata is {len(metadata)} characters; the limit is {MAX_PRIVATE_METADATA}")
    callback_id = view.get("callback_id")
    if isinstance(callback_id, str) and len(callback_id) > MAX_CALLBACK_ID:
        errors.append(f"view: callback_id is {len(callback_id)} characters; the limit is {MAX_CALLBACK_ID}")
    if include_blocks:
        errors.extend(validate_blocks(view.get("blocks", []), surface=kind))
    return errors
