"""Training data for GRPO: validate, normalise and template the user's JSONL into canonical rows.

The ``data_prep/rl_prep`` step lives here. :func:`rlvr.data.prep.prepare_rl_data` reads the ``data:`` section of
the step config (NeMo-RL key names), checks every row against the JSON Schemas in ``schemas/rows/``, maps each row to
the canonical row documented in :mod:`rlvr.data.rows`, and writes ``train.jsonl``, ``val.jsonl`` and
``data_card.json``. Modules:

* :mod:`rlvr.data.config`      -- resolve ``data.train`` / ``data.validation`` / ``data.default`` into dataset specs;
* :mod:`rlvr.data.row_schemas` -- load the row schemas and turn a jsonschema failure into a one-line message;
* :mod:`rlvr.data.formats`     -- per-format fast checks (math columns, math messages, code) equal to the schemas;
* :mod:`rlvr.data.gym`         -- NeMo-Gym rows: check and normalise (synthesise ``responses_create_params``);
* :mod:`rlvr.data.reader`      -- stream a JSONL file through a format, collecting bad lines;
* :mod:`rlvr.data.prompts`     -- prompt files, system prompts, the tokenizer's chat template, token counts;
* :mod:`rlvr.data.chat_template` -- ``policy.tokenizer.chat_template`` (default / .jinja / literal) and kwargs;
* :mod:`rlvr.data.overlap`     -- train / validation overlap: same file refused, shared prompts counted;
* :mod:`rlvr.data.score_rows`  -- rows for ``nemotron rewards score``, read through the same formats;
* :mod:`rlvr.data.card`        -- prompt-length statistics and the data card;
* :mod:`rlvr.data.rows`        -- the canonical row (the contract with the trainer and the verifiers);
* :mod:`rlvr.data.prep`        -- the step itself.
"""
