"""Chat messages → one prompt, through the model's chat template (sandboxed Jinja).

The template is the model's own (GGUF metadata `tokenizer.chat_template`, or the
Hugging Face tokenizer's), a .jinja file named by the `chat_template` parameter, or,
for a model file that carries none, the bundled Gemma turn format. Templates render
the way Hugging Face's `apply_chat_template` renders them: `messages`, `tools`,
`add_generation_prompt`, `bos_token`, `eos_token` and `raise_exception` are defined.

Messages may carry OpenAI's tool calling: an assistant's `tool_calls` (its content may
be null) and `tool` messages answering them (`tool_call_id`, content). Templates get
each call's arguments as an object, as Hugging Face's do, and `tools` as OpenAI's chat
shape.
"""

from __future__ import annotations

import contextvars
import json
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from prompt_encoding import RequestError

from llm_stack.model_errors import ErrorCode, Value
from llm_stack.tokenizer import Segment
from llm_stack.tool_calls import NAME_PATTERN, ToolError, parse_tools

AUTO = "auto"
ROLES = ("system", "user", "assistant", "tool")
# Call ids as clients send them back (OpenAI's `call_...`, vLLM's, Anthropic's): a
# template may write them as they are, so they hold no markup.
CALL_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
DEFAULT_TEMPLATE_FILE = Path(__file__).with_name("default_chat_template.jinja")
_SHOWN_CHARS = 40


class MessagesError(RequestError):
    """The chat messages, or the template's own checks, refuse the request."""

    default_code = ErrorCode.INVALID_MESSAGES

    def __init__(self, message: str, **values: Value) -> None:
        super().__init__(message, code=None, field="messages", **values)


class ToolsError(RequestError):
    """The `tools` input is refused; names the field within it."""

    def __init__(self, message: str, **values: Value) -> None:
        super().__init__(message, code=ErrorCode.INVALID_ARGUMENT, field="tools", **values)


class ChatTemplateError(ValueError):
    """The template cannot be loaded, or failed on its own (not the request's) account."""


class _TemplateRaisedError(Exception):
    """`raise_exception` in a template: the template refuses these messages."""


@dataclass(frozen=True, slots=True)
class ToolCallMessage:
    """A call an assistant message made: `arguments` as an object."""

    id: str
    name: str
    arguments: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str  # "" for an assistant's null content beside its tool calls
    tool_calls: tuple[ToolCallMessage, ...] = ()
    tool_call_id: str | None = None  # a tool message's answer to that call

    def for_template(self, content: str | None = None) -> dict[str, Any]:
        """The message as templates read it (`content` in place of its own)."""
        out: dict[str, Any] = {
            "role": self.role,
            "content": self.content if content is None else content,
        }
        if self.tool_calls:
            out["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": dict(call.arguments)},
                }
                for call in self.tool_calls
            ]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


# The characters that shape JSON text: brackets, and what opens, ends or escapes a string.
_JSON_STRUCTURE = re.compile(r'[][{}"\\]')


def _check_nesting(
    raw: str, max_depth: int | None, where: str, error: type[MessagesError | ToolsError]
) -> None:
    """`error` naming `where` when JSON text `raw` nests deeper than `max_depth` (None: no
    limit), checked before the text is parsed."""
    if max_depth is not None and json_nesting_over(raw, max_depth):
        raise error(
            f"{where}: JSON nested at least {max_depth + 1} levels deep, over the limit of "
            f"{max_depth}",
            depth=max_depth + 1,
            limit=max_depth,
        )


def json_nesting_over(raw: str, limit: int) -> bool:
    """Whether JSON text `raw` nests arrays and objects more than `limit` deep.

    Read before parsing: Python's parser recurses once per level and fails with a
    RecursionError on deep input. One pass over the structural characters.
    """
    depth = 0
    in_string = False
    escaped_at = -1
    for match in _JSON_STRUCTURE.finditer(raw):
        char, at = match.group(), match.start()
        if in_string:
            if at == escaped_at:
                continue
            if char == "\\":
                escaped_at = at + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def parse_messages(
    raw: str,
    *,
    max_messages: int | None = None,
    max_depth: int | None = None,
    max_arguments_depth: int | None = None,
) -> list[ChatMessage]:
    """The `messages` input, a JSON array of {"role", "content"} (and tool calling's
    `tool_calls` and `tool_call_id`); RequestError otherwise.

    `max_messages`, `max_depth` (the JSON's nesting) and `max_arguments_depth` (the
    nesting of each call's arguments, JSON text inside it) bound the work before it is
    done.
    """
    _check_nesting(raw, max_depth, "messages", MessagesError)
    try:
        data = json.loads(raw)
    except RecursionError:
        raise MessagesError("messages: JSON nested too deep to read") from None
    except ValueError:
        raise MessagesError("messages is not valid JSON") from None
    if not isinstance(data, list) or not data:
        raise MessagesError("messages must be a non-empty JSON array")
    if max_messages is not None and len(data) > max_messages:
        raise MessagesError(
            f"messages: {len(data)} messages exceed the limit of {max_messages}",
            messages=len(data),
            limit=max_messages,
        )
    messages = []
    answerable: set[str] = set()  # ids of the calls the messages so far may answer
    for index, item in enumerate(data):
        message = _message(item, index, max_arguments_depth)
        if message.role == "tool":
            if message.tool_call_id not in answerable:
                shown = str(message.tool_call_id)[:_SHOWN_CHARS]
                raise MessagesError(
                    f"messages[{index}].tool_call_id {shown!r} answers no call of the "
                    "assistant message before it"
                )
        else:
            answerable = {call.id for call in message.tool_calls}
        messages.append(message)
    if messages[-1].role == "assistant":
        raise MessagesError("messages: the last message must not be the assistant's")
    return messages


_KEYS = {
    "system": ("role", "content"),
    "user": ("role", "content"),
    "assistant": ("role", "content", "tool_calls"),
    "tool": ("role", "content", "tool_call_id"),
}


def _message(item: object, index: int, max_arguments_depth: int | None) -> ChatMessage:
    role = item.get("role") if isinstance(item, dict) else None
    if not isinstance(item, dict) or role not in ROLES:
        if isinstance(item, dict) and "role" in item:
            shown = str(role)[:_SHOWN_CHARS]
            raise MessagesError(
                f"messages[{index}].role must be system, user, assistant or tool, got {shown!r}"
            )
        raise MessagesError(f"messages[{index}] must be an object with role and content")
    keys = _KEYS[role]
    extra = next((key for key in item if key not in keys), None)
    if extra is not None:
        allowed = ", ".join(keys[:-1]) + " and " + keys[-1]
        raise MessagesError(f"messages[{index}]: a {role} message has {allowed} only")
    calls = (
        _tool_calls(item["tool_calls"], index, max_arguments_depth) if "tool_calls" in item else ()
    )
    content = item.get("content")
    if content is None and calls:
        content = ""  # a message of calls only
    elif not isinstance(content, str):
        raise MessagesError(f"messages[{index}].content must be a string")
    call_id = None
    if role == "tool":
        call_id = item.get("tool_call_id")
        if not isinstance(call_id, str) or not CALL_ID_PATTERN.fullmatch(call_id):
            raise MessagesError(
                f"messages[{index}].tool_call_id must be 1 to 128 letters, digits or _.:-"
            )
    return ChatMessage(role, content, calls, call_id)


def _tool_calls(
    value: object, index: int, max_arguments_depth: int | None
) -> tuple[ToolCallMessage, ...]:
    where = f"messages[{index}].tool_calls"
    if not isinstance(value, list) or not value:
        raise MessagesError(f"{where} must be a non-empty array")
    calls = []
    for number, call in enumerate(value):
        at = f"{where}[{number}]"
        if (
            not isinstance(call, dict)
            or set(call) != {"id", "type", "function"}
            or call["type"] != "function"
            or not isinstance(call["function"], dict)
            or set(call["function"]) != {"name", "arguments"}
        ):
            raise MessagesError(
                f'{at} must be {{"id", "type": "function", "function": {{"name", "arguments"}}}}'
            )
        call_id, name = call["id"], call["function"]["name"]
        arguments = call["function"]["arguments"]
        if not isinstance(call_id, str) or not CALL_ID_PATTERN.fullmatch(call_id):
            raise MessagesError(f"{at}.id must be 1 to 128 letters, digits or _.:-")
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise MessagesError(
                f"{at}.function.name must be 1 to 64 letters, digits, underscores or dashes"
            )
        calls.append(ToolCallMessage(call_id, name, _arguments(arguments, at, max_arguments_depth)))
    return tuple(calls)


def _arguments(value: object, at: str, max_depth: int | None) -> dict[str, Any]:
    where = f"{at}.function.arguments"
    if not isinstance(value, str):
        raise MessagesError(f"{where} must be a JSON object as text")
    _check_nesting(value, max_depth, where, MessagesError)
    try:
        arguments = json.loads(value)
    except (ValueError, RecursionError):
        arguments = None
    if not isinstance(arguments, dict):
        raise MessagesError(f"{where} must be a JSON object as text")
    return arguments


def parse_tools_input(raw: str, *, max_depth: int | None = None) -> list[dict[str, Any]]:
    """The `tools` input (OpenAI's chat shape, a JSON array) as templates get it, each
    tool checked as the frontend checks it; ToolsError names the field otherwise."""
    _check_nesting(raw, max_depth, "tools", ToolsError)
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise ToolsError("tools is not valid JSON") from None
    try:
        tools = parse_tools(data)
    except ToolError as exc:
        raise ToolsError(str(exc), **exc.values) from None
    return [tool.to_openai() for tool in tools]


def _raise_exception(message: str) -> NoReturn:
    raise _TemplateRaisedError(message)


def _strftime_now(format_: str) -> str:
    return datetime.now().strftime(format_)


# While a template renders with marks (`render_segments`), what `tojson` writes is marked
# too: it is data (tool definitions, call arguments), plain text like the contents.
_JSON_MARK: contextvars.ContextVar[str | None] = contextvars.ContextVar("json_mark", default=None)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson escapes HTML; chat templates expect plain JSON, with the options
    # transformers' tojson takes (templates of tool calling pass them).
    text = json.dumps(
        value,
        ensure_ascii=ensure_ascii,
        indent=indent,
        separators=None if separators is None else (separators[0], separators[1]),
        sort_keys=sort_keys,
    )
    mark = _JSON_MARK.get()
    return f"\ue002{mark}\ue003{text}\ue002{mark}\ue004" if mark else text


class ChatTemplate:
    """One compiled template; `origin` says where it came from (for logs and errors)."""

    def __init__(self, source: str, *, bos_token: str, eos_token: str, origin: str) -> None:
        self.origin = origin
        self._bos_token = bos_token
        self._eos_token = eos_token
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        env.filters["tojson"] = _tojson
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise ChatTemplateError(
                f"chat template from {origin}: line {exc.lineno}: {exc.message}"
            ) from None

    def render(
        self, messages: Sequence[ChatMessage], tools: Sequence[Mapping[str, Any]] | None = None
    ) -> str:
        """The prompt for `messages` (and `tools`, OpenAI's chat shape), ending with the
        assistant's turn opened."""
        return self._render([m.for_template() for m in messages], tools)

    def _render(
        self, messages: list[dict[str, Any]], tools: Sequence[Mapping[str, Any]] | None
    ) -> str:
        try:
            return self._template.render(
                messages=messages,
                tools=[dict(tool) for tool in tools] if tools else None,
                add_generation_prompt=True,
                bos_token=self._bos_token,
                eos_token=self._eos_token,
            )
        except _TemplateRaisedError as refused:
            raise MessagesError(f"messages: {refused}") from None
        except Exception as exc:  # a template defect, not the request's fault
            raise ChatTemplateError(
                f"chat template from {self.origin} failed: {type(exc).__name__}: {exc}"
            ) from exc

    def segments(
        self,
        messages: Sequence[ChatMessage],
        *,
        special_in_content: bool = False,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[Segment]:
        """The prompt to tokenize: `render_segments`, or with `special_in_content` the
        whole prompt as one text whose control-token texts are all tokens."""
        if special_in_content:
            return [Segment(self.render(messages, tools), special=True)]
        return self.render_segments(messages, tools)

    def render_segments(
        self, messages: Sequence[ChatMessage], tools: Sequence[Mapping[str, Any]] | None = None
    ) -> list[Segment]:
        """The prompt for `messages` in pieces: the template's own text (`special`, its
        control tokens are tokens), each message's content as the template wrote it and
        what it wrote with `tojson` (tools, call arguments) as plain text, so that no
        client writes the markup of turns.

        The template is rendered once more with each content replaced by a mark and
        `tojson`'s output marked; the text between marks is the template's. The prompt is
        that text with the contents between, as written or trimmed of whitespace
        (templates trim). A template that changes contents otherwise gets them as sent.
        """
        prompt = self.render(messages, tools)
        nonce = str(secrets.randbelow(10**12))  # digits: no filter changes them
        # Empty contents stay empty: templates test them (`if message.content`).
        marks = [f"\ue000{nonce}:{i}\ue001" if m.content else "" for i, m in enumerate(messages)]
        token = _JSON_MARK.set(nonce)
        try:
            marked = self._render(
                [m.for_template(mark) for m, mark in zip(messages, marks, strict=True)], tools
            )
        except MessagesError:
            raise ChatTemplateError(
                f"chat template from {self.origin} refuses messages once their contents are "
                "set apart; set allow_special_tokens_in_content to render it as one text"
            ) from None
        finally:
            _JSON_MARK.reset(token)
        parts = re.split(f"\ue000{nonce}:(\\d+)\ue001", marked)
        marked_pieces, slots = parts[0::2], [int(index) for index in parts[1::2]]
        split = self._data_apart(marked_pieces, nonce)
        # A mark's remains in the template's own text (data inside tojson may hold these
        # characters): a content cut or changed.
        if any(
            "\ue000" in t or "\ue001" in t for piece in split for t, special in piece if special
        ):
            raise ChatTemplateError(
                f"chat template from {self.origin} cuts or changes message contents, so they "
                "cannot be set apart from its markup; set allow_special_tokens_in_content to "
                "render it as one text"
            )
        pieces = ["".join(text for text, _ in piece) for piece in split]
        contents = [messages[slot].content for slot in slots]
        written = _align(prompt, pieces, contents) or contents
        segments = [Segment(text, special=special) for text, special in split[0]]
        for content, piece in zip(written, split[1:], strict=True):
            segments.append(Segment(content))
            segments += [Segment(text, special=special) for text, special in piece]
        return [segment for segment in segments if segment.text]

    def _data_apart(self, pieces: Sequence[str], nonce: str) -> list[list[tuple[str, bool]]]:
        """Each piece of template text as (text, special) parts: what `tojson` wrote is
        plain (a content it wrote, between two pieces, is plain in any case)."""
        inside = False
        out = []
        for piece in pieces:
            parts = re.split(f"\ue002{nonce}([\ue003\ue004])", piece)
            split = [(parts[0], not inside)]
            for mark, text in zip(parts[1::2], parts[2::2], strict=True):
                if (mark == "\ue003") == inside:  # an opening inside, or a closing outside
                    raise ChatTemplateError(
                        f"chat template from {self.origin} nests what tojson wrote; set "
                        "allow_special_tokens_in_content to render it as one text"
                    )
                inside = not inside
                split.append((text, not inside))
            out.append(split)
        if inside:
            raise ChatTemplateError(
                f"chat template from {self.origin} cuts what tojson wrote; set "
                "allow_special_tokens_in_content to render it as one text"
            )
        return out


def _align(prompt: str, pieces: Sequence[str], contents: Sequence[str]) -> list[str] | None:
    """The contents as `prompt` holds them, if it reads as pieces[0] + contents[0] +
    pieces[1] + ... with each content as given or trimmed of whitespace; else None.

    Readings differ at most in whitespace, so each content's other characters are its own.
    """
    if not prompt.startswith(pieces[0]):
        return None
    starts: Iterable[int] = (len(pieces[0]),)
    # Per content: where the next may start -> (where this one started, its form).
    steps: list[dict[int, tuple[int, str]]] = []
    for content, piece in zip(contents, pieces[1:], strict=True):
        step: dict[int, tuple[int, str]] = {}
        for start in starts:
            for form in dict.fromkeys(
                (content, content.strip(), content.lstrip(), content.rstrip())
            ):
                end = start + len(form)
                if prompt.startswith(form, start) and prompt.startswith(piece, end):
                    step.setdefault(end + len(piece), (start, form))
        if not step:
            return None
        steps.append(step)
        starts = step
    if len(prompt) not in starts:
        return None
    forms: list[str] = []
    at = len(prompt)
    for step in reversed(steps):
        at, form = step[at]
        forms.append(form)
    return forms[::-1]


def load_chat_template(
    setting: str,
    *,
    model_template: str | None,
    model_dir: Path,
    bos_token: str,
    eos_token: str,
) -> ChatTemplate:
    """The template the `chat_template` parameter names.

    `auto`: the model's own template, else the bundled default. Anything else is a
    path to a .jinja file; a relative one is taken from `model_dir`.
    """
    if setting == AUTO and model_template:
        return ChatTemplate(
            model_template, bos_token=bos_token, eos_token=eos_token, origin="the model file"
        )
    if setting == AUTO:
        path = DEFAULT_TEMPLATE_FILE
        origin = f"the bundled {path.name} (the model file has no chat template)"
    else:
        path = Path(setting).expanduser()
        if not path.is_absolute():
            path = model_dir / path
        origin = str(path)
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ChatTemplateError(f"cannot read chat template {path}: {exc.strerror}") from None
    return ChatTemplate(source, bos_token=bos_token, eos_token=eos_token, origin=origin)
