"""Chat rendering (engine/chat.py): the template's ids with no extra BOS, and front alignment that starts
at the last user message, through `SteeringPlan.bind`'s front offsets and the real `generate` path."""

from __future__ import annotations

import pytest
import torch
from tiny_models import (
    BOS_TEMPLATE,
    CHATML_TEMPLATE,
    REWRITING_TEMPLATE,
    build_tiny_chat_model,
)
from torch import nn

from engine import load_model
from engine.chat import ChatTurn, front_landing, front_refusal, render_chat
from engine.errors import InvalidInputError
from engine.generation import SamplingConfig, generate, prompt_ids
from engine.steering import Steer, SteeringPlan
from engine.vector import SteeringVector

LAYER = 1
MESSAGE = "I love weddings and the bride"


@pytest.fixture(scope="module")
def chat_models(tmp_path_factory):
    """name -> a loaded tiny llama whose tokenizer has a chat template (built lazily)."""
    root = tmp_path_factory.mktemp("chat-models")
    specs = {
        "chatml": ("chat-bos", CHATML_TEMPLATE),
        "bos": ("adds-bos", BOS_TEMPLATE),
        "rewriting": ("chat-bos", REWRITING_TEMPLATE),
    }

    class _Lazy(dict):
        def __missing__(self, name: str):
            kind, template = specs[name]
            self[name] = load_model(build_tiny_chat_model(kind, template, root / name), device="cpu")
            return self[name]

    return _Lazy()


def front_vector(loaded, n: int = 3, seed: int = 1) -> SteeringVector:
    torch.manual_seed(seed)
    hidden = loaded.info.hidden_size
    return SteeringVector(layers={LAYER: torch.randn(n, hidden)}, method="actadd", name="test")


def manual_offset(tokenizer, text: str, content: str) -> int:
    """The token count of the rendered text before the message (its boundary is a newline or ': ')."""
    return len(tokenizer(text[: text.rindex(content)], add_special_tokens=False)["input_ids"])


def test_chatml_renders_the_template_ids_with_its_own_marker_only(chat_models):
    tok = chat_models["chatml"].tokenizer
    rendered = render_chat(tok, "", [ChatTurn("user", MESSAGE)])
    assert rendered.ids == list(tok(rendered.text, add_special_tokens=False)["input_ids"])
    assert rendered.text.startswith("<|im_start|>system\nYou are a helpful assistant")  # hidden boilerplate
    assert rendered.ids[0] == tok.bos_token_id and rendered.ids[1] != tok.bos_token_id
    assert rendered.ids == prompt_ids(chat_models["chatml"], MESSAGE, chat=True)  # generate --chat's ids


def test_a_template_that_renders_bos_gets_exactly_one(chat_models):
    tok = chat_models["bos"].tokenizer
    assert tok("x")["input_ids"][0] == tok.bos_token_id  # plain text would get one from the tokenizer too
    rendered = render_chat(tok, "Be brief.", [ChatTurn("user", "  " + MESSAGE)])
    assert rendered.ids[0] == tok.bos_token_id
    assert rendered.ids.count(tok.bos_token_id) == 1
    # The template trims the message: the front still starts at its first word, whose token here also
    # carries the space after "user:" (byte-level BPE merges " I").
    off = rendered.front_offset
    assert off is not None
    assert tok.decode(rendered.ids[:off]) == "<s>system: Be brief.\nuser:"
    assert tok.decode(rendered.ids[off:]) == " " + MESSAGE + "\nassistant: "


def test_front_offset_is_the_last_user_message(chat_models):
    tok = chat_models["chatml"].tokenizer
    turns = [
        ChatTurn("user", "Hello there"),
        ChatTurn("assistant", "Hello, I love weddings"),  # the user's next words also appear here
        ChatTurn("user", MESSAGE),
    ]
    rendered = render_chat(tok, "You talk about food.", turns)
    assert rendered.text.count(MESSAGE) == 1
    assert rendered.front_offset == manual_offset(tok, rendered.text, MESSAGE)
    n = len(tok(MESSAGE, add_special_tokens=False)["input_ids"])
    assert tok.decode(rendered.ids[rendered.front_offset : rendered.front_offset + n]) == MESSAGE
    landing = front_landing(tok, rendered, 3)
    assert [l.prompt_position for l in landing] == [rendered.front_offset + i for i in range(3)]
    assert [l.token for l in landing] == tok.convert_ids_to_tokens(rendered.ids[rendered.front_offset :][:3])


def test_bind_adds_front_offsets_to_the_left_padding():
    """The hook adds vec[i] at position left_pad + front_offset + i of each row, nowhere else."""
    hidden, n = 4, 2
    vec = torch.arange(1.0, 1.0 + n * hidden).view(n, hidden)
    steer = Steer(SteeringVector(layers={0: vec}, method="actadd"), 2.0, mode="front")
    plan = SteeringPlan([[steer], [steer], []])
    blocks = nn.ModuleList([nn.Identity()])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1, 1]])
    front = [1, 3, 0]
    h = torch.zeros(3, 7, hidden)
    with plan.apply(blocks):
        plan.bind(mask, front)
        out = _run(blocks, h)
    expected = torch.zeros(3, 7, hidden)
    expected[0, 3:5] = 2.0 * vec  # left pad 2 + front 1
    expected[1, 3:5] = 2.0 * vec  # no pad, front 3
    assert torch.equal(out, expected)  # row 2 has no steering at all


def _run(blocks: nn.ModuleList, h: torch.Tensor) -> torch.Tensor:
    """Call block 0 through its hooks and return the (steered) input it received."""
    seen = {}

    def record(module, args, kwargs):
        seen["h"] = args[0]

    handle = blocks[0].register_forward_pre_hook(record, with_kwargs=True)
    try:
        blocks[0](h)
    finally:
        handle.remove()
    return seen["h"]


def test_bind_refuses_bad_front_offsets():
    plan = SteeringPlan([[]])
    with pytest.raises(InvalidInputError, match="front offsets"):
        plan.bind(torch.ones(1, 3, dtype=torch.long), [0, 1])
    with pytest.raises(InvalidInputError, match="front offsets"):
        plan.bind(torch.ones(1, 3, dtype=torch.long), [-1])


def _prompt_pass_inputs(loaded, prompt, steering) -> torch.Tensor:
    """Block LAYER's (steered) input during `generate`'s prompt pass: [batch, seq, hidden]."""
    seen: list[torch.Tensor] = []

    def record(module, args, kwargs):
        if not seen:
            seen.append((args[0] if args else kwargs["hidden_states"]).clone())

    original = SteeringPlan.apply

    def apply_then_record(
        self, blocks, **kwargs
    ):  # our hook runs after the plan's: it sees the steered input
        class _Both:
            def __enter__(inner):
                inner.ctx = original(self, blocks, **kwargs)
                inner.ctx.__enter__()
                inner.handle = blocks[LAYER].register_forward_pre_hook(record, with_kwargs=True)
                return self

            def __exit__(inner, *exc):
                inner.handle.remove()
                return inner.ctx.__exit__(*exc)

        return _Both()

    SteeringPlan.apply = apply_then_record  # type: ignore[method-assign]
    try:
        generate(loaded, prompt, steering, SamplingConfig(temperature=0, max_new_tokens=1))
    finally:
        SteeringPlan.apply = original  # type: ignore[method-assign]
    return seen[0]


def test_a_chat_turn_steers_exactly_the_users_first_tokens(chat_models):
    """Through generate: rows of different length (left padding) each get the vector on their message."""
    loaded = chat_models["chatml"]
    tok = loaded.tokenizer
    vector = front_vector(loaded)
    short = render_chat(tok, "", [ChatTurn("user", MESSAGE)])
    long = render_chat(
        tok,
        "You talk about food.",
        [ChatTurn("user", "Hi"), ChatTurn("assistant", "Hello"), ChatTurn("user", MESSAGE)],
    )
    steer = Steer(vector, 3.0, mode="front")
    base = _prompt_pass_inputs(loaded, [short, long], [[], []])
    steered = _prompt_pass_inputs(loaded, [short, long], [[steer], [steer]])
    width = base.shape[1]
    changed = (steered - base).abs().amax(-1) > 0  # [batch, seq]
    expected = torch.zeros_like(changed)
    for row, rendered in enumerate((short, long)):
        start = width - len(rendered.ids) + rendered.front_offset  # left padding + front offset
        expected[row, start : start + 3] = True
        torch.testing.assert_close(
            steered[row, start : start + 3] - base[row, start : start + 3], 3.0 * vector.layers[LAYER]
        )
    assert torch.equal(changed, expected)


def test_generate_chat_flag_uses_the_same_alignment(chat_models):
    loaded = chat_models["chatml"]
    steer = Steer(front_vector(loaded), 3.0, mode="front")
    rendered = render_chat(loaded.tokenizer, "", [ChatTurn("user", MESSAGE)])
    by_flag = generate(loaded, MESSAGE, [[steer]], SamplingConfig(temperature=0, max_new_tokens=6), chat=True)
    by_rendering = generate(loaded, rendered, [[steer]], SamplingConfig(temperature=0, max_new_tokens=6))
    assert by_flag.rows[0].token_ids == by_rendering.rows[0].token_ids
    assert by_flag.rows[0].prompt_token_ids == rendered.ids


def test_front_mode_is_refused_when_the_message_cannot_be_located(chat_models):
    loaded = chat_models["rewriting"]
    rendered = render_chat(loaded.tokenizer, "", [ChatTurn("user", MESSAGE)])
    assert rendered.front_offset is None
    assert "could not be located" in (front_refusal(rendered, 2) or "")
    steer = Steer(front_vector(loaded), 3.0, mode="front")
    with pytest.raises(InvalidInputError, match="use mode all"):
        generate(loaded, rendered, [[steer]], SamplingConfig(max_new_tokens=2))
    with pytest.raises(InvalidInputError, match="could not be located"):
        front_landing(loaded.tokenizer, rendered, 2)
    # mode all needs no alignment and still works
    all_mode = Steer(front_vector(loaded), 1.0, mode="all")
    assert generate(loaded, rendered, [[all_mode]], SamplingConfig(max_new_tokens=2)).rows[0].token_ids


def test_a_vector_longer_than_the_message_is_refused(chat_models):
    loaded = chat_models["chatml"]
    rendered = render_chat(loaded.tokenizer, "", [ChatTurn("user", "Hi")])
    steer = Steer(front_vector(loaded, n=rendered.user_tokens + 1), 1.0, mode="front")
    with pytest.raises(InvalidInputError, match="lengthen the message"):
        generate(loaded, rendered, [[steer]], SamplingConfig(max_new_tokens=2))


@pytest.mark.parametrize(
    "turns, message",
    [
        ([], "must end with a user message"),
        ([ChatTurn("user", "Hi"), ChatTurn("assistant", "Hello")], "must end with a user message"),
        ([ChatTurn("user", "   ")], "the message is empty"),
        ([ChatTurn("tool", "x"), ChatTurn("user", "Hi")], "unknown chat role"),
    ],
)
def test_bad_conversations_are_refused(chat_models, turns, message):
    with pytest.raises(InvalidInputError, match=message):
        render_chat(chat_models["chatml"].tokenizer, "", turns)


def test_a_model_without_a_template_is_refused(gpt2):
    with pytest.raises(InvalidInputError, match="no chat template"):
        render_chat(gpt2.tokenizer, "", [ChatTurn("user", "Hi")])
    with pytest.raises(InvalidInputError, match="no chat template"):
        generate(gpt2, "Hi", None, SamplingConfig(max_new_tokens=1), chat=True)
