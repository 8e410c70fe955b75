"""Chat messages → one prompt, through the model's chat template (sandboxed Jinja).

The template is the model's own (GGUF metadata `tokenizer.chat_template`, or the
Hugging Face tokenizer's), a .jinja file named by the `chat_template` parameter, or,
for a model file that carries none, the bundled Gemma turn format. Templates render
the way Hugging Face's `apply_chat_template` renders them: `messages`,
`add_generation_prompt`, `bos_token`, `eos_token` and `raise_exception` are defined.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from prompt_encoding import RequestError

from llm_stack.model_errors import ErrorCode

AUTO = "auto"
ROLES = ("system", "user", "assistant")
DEFAULT_TEMPLATE_FILE = Path(__file__).with_name("default_chat_template.jinja")
_SHOWN_CHARS = 40


class MessagesError(RequestError):
    """The chat messages, or the template's own checks, refuse the request."""

    default_code = ErrorCode.INVALID_MESSAGES

    def __init__(self, message: str) -> None:
        super().__init__(message, field="messages")


class ChatTemplateError(ValueError):
    """The template cannot be loaded, or failed on its own (not the request's) account."""


class _TemplateRaisedError(Exception):
    """`raise_exception` in a template: the template refuses these messages."""


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str


def parse_messages(raw: str) -> list[ChatMessage]:
    """The `messages` input, a JSON array of {"role", "content"}; RequestError otherwise."""
    try:
        data = json.loads(raw)
    except ValueError:
        raise MessagesError("messages is not valid JSON") from None
    if not isinstance(data, list) or not data:
        raise MessagesError("messages must be a non-empty JSON array")
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

    def render(self, messages: list[ChatMessage]) -> str:
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
