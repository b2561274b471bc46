"""Prompt templating as NeMo-RL: prompt_file is a str.format template with one {}, the system prompt and the
user text go through the tokenizer's chat template with a generation prompt, and tokens are counted with it."""

from __future__ import annotations

import pytest
from rl_prep_helpers import QWEN_TEMPLATE, expected_tokens

from rlvr.data.chat_template import PLAIN_CHAT_TEMPLATE, check_template_kwargs
from rlvr.data.prompts import PromptBuilder, load_tokenizer, read_prompt_file
from rlvr.errors import ConfigError

# NeMo-RL's examples/prompts/cot.txt: the file holds two backslashes and doubled braces.
COT = (
    "Think step-by-step to solve the following problem. Output your answer inside of \\\\boxed{{}} tags.:\n{}\n\n"
    "Let's think step-by-step"
)


def test_prompt_file_formats_the_problem_with_literal_braces(tmp_path):
    """cot.txt renders '\\\\boxed{}' literally and puts the problem where '{}' is."""
    path = tmp_path / "cot.txt"
    path.write_text(COT)
    template = read_prompt_file(str(path), "data.train.prompt_file")
    [prompt] = PromptBuilder(template=template).render(["What is {x}?"])
    assert prompt == (
        "Think step-by-step to solve the following problem. Output your answer inside of "
        "\\\\boxed{} tags.:\nWhat is {x}?\n\nLet's think step-by-step"
    )


@pytest.mark.parametrize("text", ["no placeholder", "{} and {}", "{name}", "unbalanced {"])
def test_prompt_file_needs_exactly_one_placeholder(tmp_path, text):
    """A template without a single '{}' would drop or garble the problem: it is a ConfigError naming the key."""
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(ConfigError, match="data.train.prompt_file"):
        read_prompt_file(str(path), "data.train.prompt_file")


def test_chat_template_with_system_prompt_and_token_counts(char_tokenizer_dir):
    """[system, user] go through the chat template with add_generation_prompt; tokens are counted on the text."""
    tokenizer, _ = load_tokenizer(char_tokenizer_dir)
    builder = PromptBuilder(template="Q: {}", system_prompt="Be brief.", tokenizer=tokenizer)
    prompts = builder.render(["1+1?", "2+2?"])
    assert prompts[0] == "<|system|>Be brief.\n<|user|>Q: 1+1?\n<|assistant|>"
    # 3 markers + "Be brief." (9) + "\n" + "Q: 1+1?" (7) + "\n" = 21 tokens
    assert builder.count_tokens(prompts) == [expected_tokens(p) for p in prompts] == [21, 21]


def test_gym_turns_are_templated_with_the_tokenizer_or_fall_back(char_tokenizer_dir):
    """Gym conversations use the chat template when there is a tokenizer, else the given user texts."""
    turns = [[{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]]
    assert PromptBuilder().render_turns(turns, ["q"]) == ["q"]
    builder = PromptBuilder(tokenizer=load_tokenizer(char_tokenizer_dir)[0])
    assert builder.render_turns(turns, ["q"]) == ["<|system|>s\n<|user|>q\n<|assistant|>"]


def test_system_prompt_without_tokenizer_is_an_error():
    """Without a tokenizer a system prompt has nowhere to go; silently dropping it would change the task."""
    with pytest.raises(ConfigError, match="system_prompt_file needs a chat template.*pass the tokenizer folder"):
        PromptBuilder(system_prompt="s")


def test_the_tokenizers_own_template_is_kept_when_nothing_is_configured(qwen_tokenizer_dir):
    """Absent / null chat_template: the tokenizer's own (a Qwen-style instruct template here), marked unchanged."""
    tokenizer, changed = load_tokenizer(qwen_tokenizer_dir)
    assert not changed and tokenizer.chat_template == QWEN_TEMPLATE
    [prompt] = PromptBuilder(tokenizer=tokenizer).render(["What is 2+2?"])
    assert prompt == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_default_keeps_an_own_template_and_gives_base_models_the_plain_one(
    qwen_tokenizer_dir, base_tokenizer_dir, base_bos_tokenizer_dir
):
    """'default' is the tokenizer's own template when there is one (NeMo-RL), else the built-in plain template,
    which starts with the BOS text when the tokenizer adds a BOS (prompts are encoded without special tokens)."""
    assert load_tokenizer(qwen_tokenizer_dir, "default")[1] is False
    tokenizer, changed = load_tokenizer(base_tokenizer_dir, "default")
    assert changed and tokenizer.chat_template == PLAIN_CHAT_TEMPLATE
    assert PromptBuilder(tokenizer=tokenizer).render(["2+2?"], ["Be exact."]) == ["Be exact.\n\nUser: 2+2?\nAssistant:"]
    bos_tokenizer, _ = load_tokenizer(base_bos_tokenizer_dir, "default")
    assert PromptBuilder(tokenizer=bos_tokenizer).render(["2+2?"]) == ["<s>User: 2+2?\nAssistant:"]


def test_a_jinja_file_or_a_literal_template_replaces_the_tokenizers(qwen_tokenizer_dir, tmp_path):
    """A .jinja path is read; a string with '{{' / '{%' is the template itself; both override the tokenizer's."""
    literal = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}[assistant]"
    path = tmp_path / "tpl.jinja"
    path.write_text(literal)
    for value in (str(path), literal):
        tokenizer, changed = load_tokenizer(qwen_tokenizer_dir, value, "policy.tokenizer.chat_template")
        assert changed and PromptBuilder(tokenizer=tokenizer).render(["q"]) == ["[user] q\n[assistant]"]


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("missing.jinja", "policy.tokenizer.chat_template='missing.jinja': no such file"),
        (
            "{% for m in messages %}",
            "policy.tokenizer.chat_template: the literal template is not a valid Jinja template",
        ),
        ("chatml", "is not 'default', not a .jinja file and not a Jinja template"),
        (3, "must be 'default', a .jinja file or a Jinja template"),
    ],
)
def test_bad_chat_template_values_name_the_key(qwen_tokenizer_dir, value, match):
    """A missing file, a syntax error or a bare word is one ConfigError naming policy.tokenizer.chat_template."""
    with pytest.raises(ConfigError, match=match):
        load_tokenizer(qwen_tokenizer_dir, value, "policy.tokenizer.chat_template")


def test_a_jinja_file_with_a_syntax_error_names_the_line(qwen_tokenizer_dir, tmp_path):
    path = tmp_path / "bad.jinja"
    path.write_text("{{ bos_token }}\n{% if x %}\n")
    with pytest.raises(ConfigError, match=r"the file .*bad.jinja is not a valid Jinja template: line \d+"):
        load_tokenizer(qwen_tokenizer_dir, str(path), "chat_template")


def test_chat_template_kwargs_reach_the_template(qwen_tokenizer_dir):
    """NeMo-RL's chat_template_kwargs (Qwen3 enable_thinking) are passed to every apply_chat_template call."""
    tokenizer, _ = load_tokenizer(qwen_tokenizer_dir)
    [prompt] = PromptBuilder(tokenizer=tokenizer, template_kwargs={"enable_thinking": False}).render(["q"])
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    with pytest.raises(ConfigError, match="chat_template_kwargs.tokenize is set by rl_prep"):
        check_template_kwargs({"tokenize": True}, "chat_template_kwargs")


def test_a_base_tokenizer_without_template_uses_prompt_file_alone(base_bos_tokenizer_dir):
    """A base model's tokenizer without any template: the prompt is prompt_file's text after the BOS it would add;
    a system prompt (file or row) has nowhere to go and is an error."""
    tokenizer, changed = load_tokenizer(base_bos_tokenizer_dir)
    assert tokenizer.chat_template is None and not changed
    builder = PromptBuilder(template="Question: {}\nAnswer:", tokenizer=tokenizer)
    assert builder.render(["2+2?"]) == ["<s>Question: 2+2?\nAnswer:"]
    assert builder.count_tokens(builder.render(["2+2?"]))[0] == len(tokenizer("Question: 2+2?\nAnswer:")["input_ids"])
    with pytest.raises(
        ConfigError,
        match=r"1 row\(s\) carry a system turn \(the first is row 0\).*"
        r"set a chat template \(chat_template=default",
    ):
        builder.render(["2+2?"], ["Be exact."])
    with pytest.raises(
        ConfigError,
        match=r"system_prompt_file needs a chat template \(it places the system "
        r"turn\); set a chat template",
    ):
        PromptBuilder(system_prompt="s", tokenizer=tokenizer)


def test_rows_own_system_turn_replaces_the_system_prompt_file(qwen_tokenizer_dir):
    """[system, user, assistant] rows use their system turn; the others get system_prompt_file's text."""
    tokenizer, _ = load_tokenizer(qwen_tokenizer_dir)
    builder = PromptBuilder(system_prompt="Shared.", tokenizer=tokenizer)
    own, shared = builder.render(["a", "b"], ["Own.", None])
    assert own.startswith("<|im_start|>system\nOwn.<|im_end|>") and "Shared." not in own
    assert shared.startswith("<|im_start|>system\nShared.<|im_end|>")
