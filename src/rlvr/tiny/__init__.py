"""The tiny path: data and a policy the pipeline makes itself, so ``-c tiny`` runs on a 2-core CPU offline.

- :mod:`rlvr.tiny.arith` writes deterministic arithmetic problems as math JSONL (``problem``/``expected_answer``).
- :mod:`rlvr.tiny.tokenizer` builds a character-level Hugging Face tokenizer with a short chat template.
- :mod:`rlvr.tiny.model` makes a small ``LlamaForCausalLM``.
- :mod:`rlvr.tiny.sft` trains it by supervised fine-tuning and reports greedy and sampled accuracy.

Prompt contract shared with the RL stage: the prompt is
``apply_chat_template([{"role": "user", "content": problem}], add_generation_prompt=True)``, i.e.
``<bos>Q:{problem}\\nA:``, and the answer is the plain integer followed by EOS.
"""
