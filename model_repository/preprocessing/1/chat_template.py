"""Chat messages → one prompt, through the model's chat template (sandboxed Jinja).

The template is the model's own (GGUF metadata `tokenizer.chat_template`, or the
Hugging Face tokenizer's), a .jinja file named by the `chat_template` parameter, or,
for a model file that carries none, the bundled Gemma turn format. Templates render
the way Hugging Face's `apply_chat_template` renders them: `messages`,
`add_generation_prompt`, `bos_token`, `eos_token` and `raise_exception` are defined.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from prompt_encoding import RequestError

from llm_stack.model_errors import ErrorCode, Value
from llm_stack.tokenizer import Segment

AUTO = "auto"
ROLES = ("system", "user", "assistant")
DEFAULT_TEMPLATE_FILE = Path(__file__).with_name("default_chat_template.jinja")
_SHOWN_CHARS = 40


class MessagesError(RequestError):
    """The chat messages, or the template's own checks, refuse the request."""

    default_code = ErrorCode.INVALID_MESSAGES

    def __init__(self, message: str, **values: Value) -> None:
        super().__init__(message, code=None, field="messages", **values)


class ChatTemplateError(ValueError):
    """The template cannot be loaded, or failed on its own (not the request's) account."""


class _TemplateRaisedError(Exception):
    """`raise_exception` in a template: the template refuses these messages."""


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str


# The characters that shape JSON text: brackets, and what opens, ends or escapes a string.
_JSON_STRUCTURE = re.compile(r'[][{}"\\]')


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
    raw: str, *, max_messages: int | None = None, max_depth: int | None = None
) -> list[ChatMessage]:
    """The `messages` input, a JSON array of {"role", "content"}; RequestError otherwise.

    `max_messages` and `max_depth` (JSON nesting) bound the work before it is done.
    """
    if max_depth is not None and json_nesting_over(raw, max_depth):
        raise MessagesError(
            f"messages: JSON nested at least {max_depth + 1} levels deep, over the limit of "
            f"{max_depth}",
            depth=max_depth + 1,
            limit=max_depth,
        )
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
    for index, item in enumerate(data):
        if not isinstance(item, dict) or set(item) != {"role", "content"}:
            raise MessagesError(f"messages[{index}] must be an object with role and content only")
        role, content = item["role"], item["content"]
        if role not in ROLES:
            shown = str(role)[:_SHOWN_CHARS]
            raise MessagesError(
                f"messages[{index}].role must be system, user or assistant, got {shown!r}"
            )
        if not isinstance(content, str):
            raise MessagesError(f"messages[{index}].content must be a string")
        messages.append(ChatMessage(role, content))
    if messages[-1].role == "assistant":
        raise MessagesError("messages: the last message must not be the assistant's")
    return messages


def _raise_exception(message: str) -> NoReturn:
    raise _TemplateRaisedError(message)


def _strftime_now(format_: str) -> str:
    return datetime.now().strftime(format_)


def _tojson(value: Any, indent: int | None = None) -> str:
    # Jinja's own tojson escapes HTML; chat templates expect plain JSON, as in transformers.
    return json.dumps(value, ensure_ascii=False, indent=indent)


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

    def render(self, messages: Sequence[ChatMessage]) -> str:
        """The prompt for `messages`, ending with the assistant's turn opened."""
        try:
            return self._template.render(
                messages=[{"role": m.role, "content": m.content} for m in messages],
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
        self, messages: Sequence[ChatMessage], *, special_in_content: bool = False
    ) -> list[Segment]:
        """The prompt to tokenize: `render_segments`, or with `special_in_content` the
        whole prompt as one text whose control-token texts are all tokens."""
        if special_in_content:
            return [Segment(self.render(messages), special=True)]
        return self.render_segments(messages)

    def render_segments(self, messages: Sequence[ChatMessage]) -> list[Segment]:
        """The prompt for `messages` in pieces: the template's own text (`special`, its
        control tokens are tokens) and each message's content as the template wrote it
        (plain text, so a message cannot write the markup of turns).

        The template is rendered once more with each content replaced by a mark; the
        text between marks is the template's. The prompt is that text with the contents
        between, as written or trimmed of whitespace (templates trim). A template that
        changes contents otherwise gets them as sent.
        """
        prompt = self.render(messages)
        nonce = str(secrets.randbelow(10**12))  # digits: no filter changes them
        marks = [f"\ue000{nonce}:{index}\ue001" for index in range(len(messages))]
        try:
            marked = self.render(
                [ChatMessage(m.role, mark) for m, mark in zip(messages, marks, strict=True)]
            )
        except MessagesError:
            raise ChatTemplateError(
                f"chat template from {self.origin} refuses messages once their contents are "
                "set apart; set allow_special_tokens_in_content to render it as one text"
            ) from None
        parts = re.split(f"\ue000{nonce}:(\\d+)\ue001", marked)
        pieces, slots = parts[0::2], [int(index) for index in parts[1::2]]
        if any("\ue000" in piece or "\ue001" in piece for piece in pieces):
            raise ChatTemplateError(
                f"chat template from {self.origin} cuts or changes message contents, so they "
                "cannot be set apart from its markup; set allow_special_tokens_in_content to "
                "render it as one text"
            )
        contents = [messages[slot].content for slot in slots]
        written = _align(prompt, pieces, contents) or contents
        segments = [Segment(pieces[0], special=True)]
        for content, piece in zip(written, pieces[1:], strict=True):
            segments += [Segment(content), Segment(piece, special=True)]
        return [segment for segment in segments if segment.text]


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
