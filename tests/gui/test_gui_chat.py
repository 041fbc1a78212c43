"""The Chat tab, driven through its real widgets on a tiny model with a chat template."""

from __future__ import annotations

import pytest
from signal_waits import wait_for_emission
from tiny_models import CHATML_TEMPLATE, REWRITING_TEMPLATE, build_tiny_chat_model

from engine import load_model
from engine.chat import ChatTurn, render_chat
from engine.generation import SamplingConfig, generate
from engine.steering import Steer
from engine.vector import load_vector
from gui.jobs import ChatRequest
from gui.panels.chat import parse_stop_strings

pytestmark = pytest.mark.gui
MESSAGE = "I love weddings and the bride"


@pytest.fixture(scope="module")
def chat_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("gui-chat")
    return {
        "chatml": build_tiny_chat_model("chat-bos", CHATML_TEMPLATE, root / "chatml"),
        "rewriting": build_tiny_chat_model("chat-bos", REWRITING_TEMPLATE, root / "rewriting"),
    }


@pytest.fixture
def chat_window(window, load_model_in, capture_in, chat_dirs):
    """The window with the ChatML tiny model, a Love-Hate front vector active in Generate, sampling set."""
    load_model_in(window, chat_dirs["chatml"])
    entry = capture_in(window, name="love", positive="Love", negative="Hate", layer=1)
    row = window.generate_panel.add_vector(entry)
    row.set_coefficient(3.0)
    form = window.chat_panel.sampling_form
    form.set_sampling(SamplingConfig(temperature=1.0, top_p=1.0, max_new_tokens=12, seed=5))
    return window


def send(qtbot, window, text: str | None = None, button=None, timeout=30_000) -> list[str]:
    """Type `text` (if given), press `button` (Send), wait for the turn; return the streamed pieces."""
    panel = window.chat_panel
    pieces: list[str] = []
    jobs = []
    window.context.controller.job_submitted.connect(lambda job: jobs.append(job))
    if text is not None:
        panel.message.setPlainText(text)
    (button or panel.send_button).click()
    [job] = jobs
    assert isinstance(job.request, ChatRequest)
    job.token.connect(lambda event: pieces.append(event.text))
    qtbot.waitSignal(job.finished, timeout=timeout).wait()
    return pieces


def engine_answer(folder, window, system: str, turns: list[ChatTurn], sampling: SamplingConfig):
    """The same turn through the engine directly: the rendering, the steering and the seed must agree."""
    loaded = load_model(folder, device="cpu")
    row = window.generate_panel.vector_rows()[0]
    steer = Steer(load_vector(row.entry.path), row.coefficient(), mode=row.active_vector().mode)
    return generate(loaded, render_chat(loaded.tokenizer, system, turns), [[steer]], sampling).rows[0]


def test_the_chat_tab_is_there_only_for_models_with_a_template(loaded_window, load_model_in, chat_dirs):
    tabs, panel = loaded_window.tabs, loaded_window.chat_panel
    assert not tabs.isTabVisible(tabs.indexOf(panel))  # tiny GPT-2: no chat template
    assert not panel.send_button.isEnabled() and not panel.template_note.isHidden()
    load_model_in(loaded_window, chat_dirs["chatml"])
    assert tabs.isTabVisible(tabs.indexOf(panel))
    assert panel.send_button.isEnabled() and panel.template_note.isHidden()


def test_send_streams_a_steered_answer_as_its_own_turn(qtbot, chat_window, chat_dirs):
    panel = chat_window.chat_panel
    panel.system.setPlainText("You talk about food.")
    pieces = send(qtbot, chat_window, MESSAGE)
    assert [t.role for t in panel.turns] == ["user", "assistant"]
    assert panel.turns[0].content == MESSAGE and panel.message.toPlainText() == ""
    answer = panel.turns[1].content
    assert len(pieces) > 1 and "".join(pieces) == answer  # streamed token by token
    view = panel.view.toPlainText()
    assert f"You\n{MESSAGE}\n" in view and f"Assistant\n{answer}" in view  # not glued to the message
    request_sampling = SamplingConfig(temperature=1.0, top_p=1.0, max_new_tokens=12, seed=5)
    system, turns = "You talk about food.", [ChatTurn("user", MESSAGE)]
    direct = engine_answer(chat_dirs["chatml"], chat_window, system, turns, request_sampling)
    assert panel.outcome is not None
    assert panel.outcome.rows[0].token_ids == direct.token_ids  # steered, rendered the same
    assert panel.outcome.rows[0].prompt_token_ids == direct.prompt_token_ids

    # The second turn: the whole conversation is the prompt, and it is steered too.
    send(qtbot, chat_window, "Tell me more")
    assert [t.role for t in panel.turns] == ["user", "assistant"] * 2
    turns = [*panel.turns[:3]]
    direct = engine_answer(chat_dirs["chatml"], chat_window, system, turns, request_sampling)
    assert panel.turns[3].content == direct.text


def test_regenerate_uses_the_same_seed_unless_changed(qtbot, chat_window):
    panel = chat_window.chat_panel
    send(qtbot, chat_window, MESSAGE)
    first = panel.turns[1].content
    assert panel.regenerate_button.isEnabled()
    send(qtbot, chat_window, button=panel.regenerate_button)
    assert len(panel.turns) == 2 and panel.turns[1].content == first
    panel.sampling_form.seed.setValue(6)
    submitted = []
    chat_window.context.controller.job_submitted.connect(lambda job: submitted.append(job.request))
    send(qtbot, chat_window, button=panel.regenerate_button)
    assert submitted[-1].sampling.seed == 6 and len(panel.turns) == 2


def test_editing_the_system_prompt_changes_the_next_turn(qtbot, chat_window, chat_dirs):
    panel = chat_window.chat_panel
    submitted = []
    chat_window.context.controller.job_submitted.connect(lambda job: submitted.append(job.request))
    send(qtbot, chat_window, MESSAGE)
    panel.system.setPlainText("You are a pirate.")
    send(qtbot, chat_window, "Hello again")
    assert submitted[0].system == "" and submitted[1].system == "You are a pirate."
    tokenizer = chat_window.context.model.tokenizer
    expected = render_chat(tokenizer, "You are a pirate.", panel.turns[:3]).ids
    assert panel.outcome.rows[0].prompt_token_ids == expected


def test_stop_strings_cut_the_answer(qtbot, chat_window):
    panel = chat_window.chat_panel
    send(qtbot, chat_window, MESSAGE)
    full = panel.turns[1].content
    stop = full[4:7]
    assert len(stop) == 3 and full.find(stop) >= 1
    panel.stop_strings.setPlainText(stop + "\nnever\\nthere")
    assert parse_stop_strings(panel.stop_strings.toPlainText()) == (stop, "never\nthere")
    send(qtbot, chat_window, button=panel.regenerate_button)
    assert panel.turns[1].content == full[: full.find(stop)]
    assert panel.outcome.rows[0].finish_reason == "stop"


def test_stop_keeps_the_partial_answer(qtbot, chat_window, job_of):
    panel = chat_window.chat_panel
    panel.sampling_form.max_tokens.setValue(200)
    chat_window.context.controller.worker.pace_s = 0.05
    panel.message.setPlainText(MESSAGE)
    job = job_of(chat_window.context.controller, panel.send_button.click)
    wait_for_emission(qtbot, job.token, timeout=30_000)
    assert panel.stop_button.isEnabled() and not panel.send_button.isEnabled()
    with qtbot.waitSignal(job.finished, timeout=30_000):
        panel.stop_button.click()
    assert panel.outcome.cancelled and len(panel.outcome.rows[0].token_ids) < 200
    assert [t.role for t in panel.turns] == ["user", "assistant"]
    assert panel.send_button.isEnabled() and not panel.stop_button.isEnabled()


def test_front_preview_shows_where_the_vector_lands(chat_window):
    panel = chat_window.chat_panel
    panel.system.setPlainText("You talk about food.")
    panel.message.setPlainText(MESSAGE)
    panel.update_steering_note()
    assert "love (c=3" in panel.steering_note.text()
    n = chat_window.generate_panel.vector_rows()[0].entry.shape[0]
    tokenizer = chat_window.context.model.tokenizer
    rendered = render_chat(tokenizer, "You talk about food.", [ChatTurn("user", MESSAGE)])
    first = rendered.front_offset
    assert f"tokens {first}–{first + n - 1}:" in panel.front_note.text()
    assert "[I]" in panel.front_note.text()  # the first word of the message, not the template's system


def test_front_mode_refused_when_the_message_cannot_be_located(qtbot, chat_window, load_model_in, chat_dirs):
    load_model_in(chat_window, chat_dirs["rewriting"])
    panel = chat_window.chat_panel
    panel.message.setPlainText(MESSAGE)
    panel.update_steering_note()
    assert "use mode all" in panel.front_note.text()
    send(qtbot, chat_window)
    assert chat_window.errors and "use mode all" in chat_window.errors[-1][1]
    assert panel.turns == [] and panel.message.toPlainText() == MESSAGE  # given back to edit


def test_the_system_prompt_and_stop_strings_come_back(qtbot, settings, library_dir):
    from gui.main_window import MainWindow

    first = MainWindow(settings=settings, library_root=library_dir, autoload=None)
    qtbot.addWidget(first)
    first.chat_panel.system.setPlainText("You are terse.")
    first.chat_panel.stop_strings.setPlainText("User:")
    first.close()
    second = MainWindow(settings=settings, library_root=library_dir, autoload=None)
    qtbot.addWidget(second)
    assert second.chat_panel.system.toPlainText() == "You are terse."
    assert second.chat_panel.stop_strings.toPlainText() == "User:"
    second.close()


def test_generate_tabs_chat_answer_is_not_glued_to_the_prompt(chat_window, run_generation):
    panel = chat_window.generate_panel
    panel.prompt.setPlainText(MESSAGE)
    panel.chat.setChecked(True)
    transcript = run_generation(chat_window)
    assert transcript is not None and transcript.chat
    answer = transcript.outputs["steered"]
    assert panel.steered.toPlainText() == f"{MESSAGE}\n\n{answer}"
