"""Prompt templating as NeMo-RL: prompt_file is a str.format template with one {}, the system prompt and the
user text go through the tokenizer's chat template with a generation prompt, and tokens are counted with it."""

from __future__ import annotations

import pytest
from rl_prep_helpers import expected_tokens

from rlvr.data.prompts import PromptBuilder, load_tokenizer, read_prompt_file
from rlvr.errors import ConfigError

# NeMo-RL's examples/prompts/cot.txt: the file holds two backslashes and doubled braces.
COT = "Think step-by-step to solve the following problem. Output your answer inside of \\\\boxed{{}} tags.:\n{}\n\n" \
      "Let's think step-by-step"


def test_prompt_file_formats_the_problem_with_literal_braces(tmp_path):
    """cot.txt renders '\\\\boxed{}' literally and puts the problem where '{}' is."""
    path = tmp_path / "cot.txt"
    path.write_text(COT)
    template = read_prompt_file(str(path), "data.train.prompt_file")
    [prompt] = PromptBuilder(template=template).render(["What is {x}?"])
    assert prompt == ("Think step-by-step to solve the following problem. Output your answer inside of "
                      "\\\\boxed{} tags.:\nWhat is {x}?\n\nLet's think step-by-step")


@pytest.mark.parametrize("text", ["no placeholder", "{} and {}", "{name}", "unbalanced {"])
def test_prompt_file_needs_exactly_one_placeholder(tmp_path, text):
    """A template without a single '{}' would drop or garble the problem: it is a ConfigError naming the key."""
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(ConfigError, match="data.train.prompt_file"):
        read_prompt_file(str(path), "data.train.prompt_file")


def test_chat_template_with_system_prompt_and_token_counts(char_tokenizer_dir):
    """[system, user] go through the chat template with add_generation_prompt; tokens are counted on the text."""
    tokenizer = load_tokenizer(char_tokenizer_dir)
    builder = PromptBuilder(template="Q: {}", system_prompt="Be brief.", tokenizer=tokenizer)
    prompts = builder.render(["1+1?", "2+2?"])
    assert prompts[0] == "<|system|>Be brief.\n<|user|>Q: 1+1?\n<|assistant|>"
    # 3 markers + "Be brief." (9) + "\n" + "Q: 1+1?" (7) + "\n" = 21 tokens
    assert builder.count_tokens(prompts) == [expected_tokens(p) for p in prompts] == [21, 21]


def test_gym_turns_are_templated_with_the_tokenizer_or_fall_back(char_tokenizer_dir):
    """Gym conversations use the chat template when there is a tokenizer, else the given user texts."""
    turns = [[{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]]
    assert PromptBuilder().render_turns(turns, ["q"]) == ["q"]
    builder = PromptBuilder(tokenizer=load_tokenizer(char_tokenizer_dir))
    assert builder.render_turns(turns, ["q"]) == ["<|system|>s\n<|user|>q\n<|assistant|>"]


def test_system_prompt_without_tokenizer_is_an_error():
    """Without a tokenizer a system prompt has nowhere to go; silently dropping it would change the task."""
    with pytest.raises(ConfigError, match="system_prompt_file needs a tokenizer"):
        PromptBuilder(system_prompt="s")


def test_tokenizer_without_chat_template_is_an_error(char_tokenizer_dir, tmp_path):
    """The chat template is how prompts are built; a tokenizer folder without one is rejected by name."""
    import shutil

    folder = tmp_path / "tok"
    shutil.copytree(char_tokenizer_dir, folder)
    (folder / "chat_template.jinja").unlink()
    with pytest.raises(ConfigError, match="has no chat template"):
        load_tokenizer(folder)
