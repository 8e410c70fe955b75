"""The preprocessing model's chat template: source, rendering, refusals and the `messages` input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tritonclient.grpc.aio as grpcclient
from chat_template import (
    DEFAULT_TEMPLATE_FILE,
    ChatMessage,
    ChatTemplate,
    ChatTemplateError,
    load_chat_template,
    parse_messages,
)
from prompt_encoding import RequestError, encode_prompt
from tritonclient.utils import InferenceServerException

from llm_stack.ensemble_client import Result, call, generate
from llm_stack.ensemble_contract import EnsembleRequest
from llm_stack.tokenizer import GgufTokenizer

SPECIAL = {"bos_token": "<bos>", "eos_token": "<eos>"}
USER = ChatMessage("user", "Hi")


def default_template(tmp_path: Path) -> ChatTemplate:
    return load_chat_template("auto", model_template=None, model_dir=tmp_path, **SPECIAL)


# -- the bundled default (Gemma's turn format) ----------------------------------------------


@pytest.mark.parametrize(
    ("messages", "prompt"),
    [
        ([USER], "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"),
        ([ChatMessage("system", "Be brief. "), ChatMessage("user", " Hi ")],
         "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"),
        ([USER, ChatMessage("assistant", "Hello!"), ChatMessage("user", "Bye")],
         "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
         "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"),
        ([ChatMessage("system", "Only this")],
         "<bos><start_of_turn>user\nOnly this<end_of_turn>\n<start_of_turn>model\n"),
    ],
)  # fmt: skip
def test_default_template_is_gemmas_turn_format(
    tmp_path: Path, messages: list[ChatMessage], prompt: str
) -> None:
    assert default_template(tmp_path).render(messages) == prompt


@pytest.mark.parametrize(
    "messages",
    [
        [USER, ChatMessage("user", "again")],
        [ChatMessage("assistant", "I start"), USER],
        [USER, ChatMessage("assistant", "ok"), ChatMessage("system", "late")],
    ],
)
def test_default_template_refuses_turns_out_of_order(
    tmp_path: Path, messages: list[ChatMessage]
) -> None:
    with pytest.raises(RequestError) as refused:
        default_template(tmp_path).render(messages)
    assert str(refused.value) == (
        "messages: roles must alternate user/assistant/user/... after an optional first "
        "system message"
    )


def test_gguf_without_a_template_falls_back_to_the_bundled_one(
    gguf_tokenizer: GgufTokenizer, tmp_path: Path
) -> None:
    # The default model (Gemma 3 270M base) carries no tokenizer.chat_template.
    assert gguf_tokenizer.chat_template is None
    assert (gguf_tokenizer.bos_token, gguf_tokenizer.eos_token) == ("<bos>", "<eos>")
    template = load_chat_template(
        "auto",
        model_template=gguf_tokenizer.chat_template,
        model_dir=tmp_path,
        bos_token=gguf_tokenizer.bos_token,
        eos_token=gguf_tokenizer.eos_token,
    )
    assert "bundled default_chat_template.jinja" in template.origin
    ids = encode_prompt(
        gguf_tokenizer, template.render([USER]), 64, add_special=False, field="messages"
    )
    bos = gguf_tokenizer.encode("x", add_special=True)[0]
    turn = gguf_tokenizer.encode("<start_of_turn>", add_special=False)
    assert ids[0] == bos  # the template's BOS, and only it
    assert ids.count(bos) == 1
    assert len(turn) == 1  # a control token, not text
    assert ids[1] == turn[0]
    assert ids.count(turn[0]) == 2  # the user's turn and the model's


def test_model_template_wins_under_auto(tmp_path: Path) -> None:
    own = (
        "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}"
        "{{ eos_token }}"
    )
    template = load_chat_template("auto", model_template=own, model_dir=tmp_path, **SPECIAL)
    assert template.origin == "the model file"
    assert template.render([USER]) == "<bos>[user]Hi<eos>"


def test_template_file_relative_to_the_model_directory(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "mine.jinja").write_text(
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    # A file named in the config wins over the model's own template.
    template = load_chat_template(
        "templates/mine.jinja", model_template="{{ 'own' }}", model_dir=tmp_path, **SPECIAL
    )
    assert template.render([USER]) == "<user>Hi<assistant>"
    absolute = load_chat_template(
        str(DEFAULT_TEMPLATE_FILE), model_template=None, model_dir=tmp_path, **SPECIAL
    )
    assert absolute.render([USER]) == default_template(tmp_path).render([USER])


def test_missing_or_broken_template_fails_at_load(tmp_path: Path) -> None:
    with pytest.raises(ChatTemplateError, match=r"cannot read chat template .*nope\.jinja"):
        load_chat_template("nope.jinja", model_template=None, model_dir=tmp_path, **SPECIAL)
    (tmp_path / "broken.jinja").write_text("{% for m in messages %}\n{{ m.content }")
    with pytest.raises(ChatTemplateError, match=r"broken\.jinja: line 2: "):
        load_chat_template("broken.jinja", model_template=None, model_dir=tmp_path, **SPECIAL)


def test_helpers_templates_expect(tmp_path: Path) -> None:
    template = ChatTemplate(
        "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}"
        "{{ m | tojson }}{% endfor %}",
        origin="test",
        **SPECIAL,
    )
    assert json.loads(template.render([ChatMessage("user", "Grüß"), USER])) == {
        "role": "user", "content": "Grüß",
    }  # fmt: skip
    assert "Grüß" in template.render([ChatMessage("user", "Grüß")])  # not \\u-escaped


@pytest.mark.parametrize(
    ("source", "cause"),
    [
        # The immutable sandbox: no reaching internals, no changing the messages.
        ("{{ messages[0].content.upper.__globals__.os }}", "UndefinedError"),
        ("{{ messages.pop() }}", "SecurityError"),
        ("{{ messages[0].nope.deeper }}", "UndefinedError"),
    ],
)
def test_template_defects_are_the_servers_fault(source: str, cause: str) -> None:
    template = ChatTemplate(source, origin="test", **SPECIAL)
    with pytest.raises(ChatTemplateError, match=f"chat template from test failed: {cause}"):
        template.render([USER])


def test_unknown_filter_fails_at_load() -> None:
    with pytest.raises(ChatTemplateError, match="chat template from test: line 1: "):
        ChatTemplate("{{ messages | nosuchfilter }}", origin="test", **SPECIAL)


# -- the `messages` input --------------------------------------------------------------------


def test_parse_messages() -> None:
    raw = json.dumps([{"role": "system", "content": ""}, {"role": "user", "content": "Hi"}])
    assert parse_messages(raw) == [ChatMessage("system", ""), USER]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not json", "messages is not valid JSON"),
        ('{"role": "user"}', "messages must be a non-empty JSON array"),
        ("[]", "messages must be a non-empty JSON array"),
        ('[{"role": "user", "content": "x", "name": "n"}]',
         "messages[0] must be an object with role and content only"),
        ('["hi"]', "messages[0] must be an object with role and content only"),
        ('[{"role": "tool", "content": "x"}]',
         "messages[0].role must be system, user or assistant, got 'tool'"),
        ('[{"role": "user", "content": ["x"]}]', "messages[0].content must be a string"),
        ('[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]',
         "messages: the last message must not be the assistant's"),
    ],
)  # fmt: skip
def test_parse_messages_rejects_naming_messages(raw: str, message: str) -> None:
    with pytest.raises(RequestError) as refused:
        parse_messages(raw)
    assert str(refused.value) == message


def test_chat_prompt_limit_names_messages(gguf_tokenizer: GgufTokenizer) -> None:
    with pytest.raises(RequestError, match=r"^messages: prompt has \d+ tokens, exceeds the limit"):
        encode_prompt(gguf_tokenizer, "word " * 40, 8, add_special=False, field="messages")


# -- through Triton ----------------------------------------------------------------------------


async def chat_call(
    client: grpcclient.InferenceServerClient, messages: str, text_input: str = ""
) -> Result:
    request = EnsembleRequest(text_input, 4, temperature=0.0, messages=messages)
    return await call(client, request)


@pytest.mark.integration
async def test_messages_replace_text_input(
    client: grpcclient.InferenceServerClient, gguf_tokenizer: GgufTokenizer
) -> None:
    messages = json.dumps([{"role": "user", "content": "Hi"}])
    chat = await chat_call(client, messages)
    ignored = await chat_call(client, messages, text_input="a much longer text that is ignored")
    assert chat.error is None
    assert ignored.error is None
    expected = "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    assert chat.num_input_tokens == len(gguf_tokenizer.encode(expected, add_special=False))
    assert ignored.num_input_tokens == chat.num_input_tokens
    assert ignored.text == chat.text


@pytest.mark.integration
async def test_bad_messages_are_invalid_arg(client: grpcclient.InferenceServerClient) -> None:
    result = await chat_call(client, '[{"role": "user", "content": 1}]')
    assert isinstance(result.error, InferenceServerException)
    assert "messages[0].content must be a string" in result.error.message()


@pytest.mark.integration
async def test_empty_text_input_without_messages_is_refused(
    client: grpcclient.InferenceServerClient,
) -> None:
    result = await generate(client, "", 4)
    assert isinstance(result.error, InferenceServerException)
    assert "text_input is empty" in result.error.message()
