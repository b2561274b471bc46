"""A character-level Hugging Face tokenizer for the tiny policy: one character, one token.

Built with the ``tokenizers`` library (a ``WordLevel`` model over single characters after a split-every-character
pre-tokenizer, and a ``Fuse`` decoder so that decoding concatenates without spaces), saved as a standard
``tokenizer.json`` + ``tokenizer_config.json`` that ``transformers.AutoTokenizer.from_pretrained`` loads.

Special tokens: ``<pad>`` = 0, ``<unk>`` = 1, ``<bos>`` = 2, ``<eos>`` = 3. Encoding adds no special tokens by
itself: the chat template writes the BOS, so tokenising the templated string with or without
``add_special_tokens`` gives the same ids (NeMo-RL tokenises the templated prompt once, adding none).

Chat template (jinja, in ``tokenizer_config.json``), kept to a few tokens::

    <bos>Q:{user content}\\nA:{assistant content}<eos>

with ``add_generation_prompt=True`` ending the prompt at ``A:``; the model answers with the plain integer + EOS.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where the tokenizer is built: -d reads the vocabulary's size, without transformers
    from transformers import PreTrainedTokenizerFast

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, UNK, BOS, EOS)

# Digits, arithmetic and the template's own letters come first so their ids do not depend on extra_chars.
BASE_CHARS = string.digits + "+-*/=()., ?:\nQA"

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n"
    "{% elif message['role'] == 'user' %}Q:{{ message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}A:{{ message['content'] }}{{ eos_token }}"
    "{% else %}{{ raise_exception('the tiny chat template knows the roles system, user and assistant, not '"
    " + message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}A:{% endif %}"
)


def char_vocabulary(extra_chars: str = "") -> list[str]:
    """Token strings in id order: the special tokens, then :data:`BASE_CHARS`, then new characters of ``extra_chars``.

    Order of first appearance is kept, so the same ``extra_chars`` always gives the same ids.
    """
    vocab = list(SPECIAL_TOKENS)
    seen = set(vocab)
    for ch in BASE_CHARS + extra_chars:
        if ch not in seen:
            seen.add(ch)
            vocab.append(ch)
    return vocab


def build_char_tokenizer(out_dir: str | Path, extra_chars: str = "") -> PreTrainedTokenizerFast:
    """Build the tokenizer, save it under ``out_dir`` (``tokenizer.json``, ``tokenizer_config.json``), return it.

    Characters outside the vocabulary encode to ``<unk>``; pass every character of the data in ``extra_chars``.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = char_vocabulary(extra_chars)
    backend = Tokenizer(models.WordLevel({tok: i for i, tok in enumerate(vocab)}, unk_token=UNK))
    # "[\s\S]" matches every character including the newline; "isolated" makes each one its own pre-token.
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out_dir)
    _write_portable_config(out_dir)
    return tokenizer


def _write_portable_config(out_dir: Path) -> None:
    """Make the saved files readable by transformers 4.x readers too (vLLM images, older pipelines).

    transformers 5 writes ``tokenizer_class: TokenizersBackend`` (unknown to 4.x) and puts the chat template
    only in ``chat_template.jinja``; 4.x before 4.43 reads it from ``tokenizer_config.json``. Both files now
    carry the same template, under the class name every version knows, plus ``special_tokens_map.json``.
    """
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config["chat_template"] = CHAT_TEMPLATE
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD, "unk_token": UNK}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
