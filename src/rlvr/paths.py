"""Where the project's declarative files live (schemas, step manifests, profiles, the Snakefile).

rlvr is installed editable from its repository (``make`` does this), so these sit beside ``src/``. Set
``RLVR_HOME`` to point a non-editable install at a checkout of the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(os.environ.get("RLVR_HOME") or Path(__file__).resolve().parents[2])
SCHEMA_DIR = REPO_ROOT / "schemas"
STEPS_DIR = REPO_ROOT / "steps"
PROFILES_DIR = REPO_ROOT / "profiles"
SNAKEFILE = REPO_ROOT / "Snakefile"
