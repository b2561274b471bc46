"""Plugin options: env vars, secret references, mounts, the storage check and log redaction (no server)."""

from __future__ import annotations

import pytest

from rlvr.errors import ConfigError
from snakemake_executor_plugin_lepton.config import (
    Mount,
    check_storage,
    is_secret_name,
    job_envs,
    leaked_secret_names,
    parse_env_vars,
    parse_mounts,
    parse_options,
    parse_secrets,
    redact,
)


@pytest.mark.parametrize(
    "name,secret",
    [
        ("HF_TOKEN", True),
        ("WANDB_API_KEY", True),
        ("aws_secret_access_key", True),
        ("DB_PASSWORD", True),
        ("SMB_PASSWD", True),
        ("GOOGLE_APPLICATION_CREDENTIALS", True),
        ("HF_HOME", False),
        ("RAY_DEDUP_LOGS", False),
    ],
)
def test_secret_names(name, secret):
    """Names containing KEY/TOKEN/SECRET/PASSWORD/PASSWD/CREDENTIAL (any case) are secrets."""
    assert is_secret_name(name) is secret


def test_env_vars_parse_and_refuse_secrets_and_reserved_names():
    """NAME=VALUE (value may hold '='); secret-looking or Lepton-reserved names and malformed items fail."""
    assert parse_env_vars(["HF_HOME=/mnt/hf", "OPTS=a=b", "EMPTY="]) == {
        "HF_HOME": "/mnt/hf",
        "OPTS": "a=b",
        "EMPTY": "",
    }
    with pytest.raises(ConfigError, match="lepton-secrets as 'HF_TOKEN=HF_TOKEN'"):
        parse_env_vars(["HF_TOKEN=hf_abc"])
    with pytest.raises(ConfigError, match="set by Lepton itself"):
        parse_env_vars(["LEPTON_JOB_NAME=x"])
    with pytest.raises(ConfigError, match="not NAME=VALUE"):
        parse_env_vars(["HF_HOME"])
    with pytest.raises(ConfigError, match="invalid variable name"):
        parse_env_vars(["1X=2"])


def test_secrets_parse_with_and_without_secret_name():
    """NAME=SECRET maps to that secret; a bare NAME to a secret of the same name."""
    assert parse_secrets(["HF_TOKEN=hf-token", "WANDB_API_KEY"]) == {
        "HF_TOKEN": "hf-token",
        "WANDB_API_KEY": "WANDB_API_KEY",
    }
    with pytest.raises(ConfigError, match="names no workspace secret"):
        parse_secrets(["HF_TOKEN="])


def test_mounts_parse_like_the_lep_cli():
    """PATH:MOUNT_PATH:FROM where FROM keeps its own colon; system paths and relative targets fail."""
    assert parse_mounts(["/rlvr:/mnt/shared/:node-nfs:amlfs"]) == (Mount("/rlvr", "/mnt/shared", "node-nfs:amlfs"),)
    assert Mount("/a", "/b", "c").to_json() == {"path": "/a", "mount_path": "/b", "from": "c"}
    for bad, message in [
        ("/a:/usr:node-nfs:x", "system path"),
        ("/a:mnt:node-nfs:x", "absolute"),
        ("/a:/mnt", "PATH:MOUNT_PATH:FROM"),
        ("/a::x", "PATH:MOUNT_PATH:FROM"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_mounts([bad])


def test_shared_mount_must_be_a_configured_mount():
    """lepton-shared-mount names one of the mounts' MOUNT_PATHs (normalised), else the error lists them."""
    opts = parse_options([], [], ["/x:/mnt/shared:node-nfs:s"], "/mnt/shared/")
    assert opts.shared_mount == "/mnt/shared"
    with pytest.raises(ConfigError, match="configured mount paths: /mnt/shared"):
        parse_options([], [], ["/x:/mnt/shared:node-nfs:s"], "/mnt/other")


def test_storage_check(tmp_path):
    """Shared I/O needs a shared mount containing the workdir; storage-plugin mode (no shared I/O) needs none."""
    none = parse_options([], [], [], None)
    with pytest.raises(ConfigError, match="--default-storage-provider"):
        check_storage(none, str(tmp_path), shared_io=True)
    check_storage(none, str(tmp_path), shared_io=False)
    inside = parse_options([], [], [f"/v:{tmp_path}:node-nfs:s"], str(tmp_path))
    check_storage(inside, str(tmp_path / "run"), shared_io=True)
    check_storage(inside, str(tmp_path), shared_io=True)
    other = parse_options([], [], [f"/v:{tmp_path}x:node-nfs:s"], f"{tmp_path}x")  # a prefix, not a parent
    with pytest.raises(ConfigError, match="not under lepton-shared-mount"):
        check_storage(other, str(tmp_path), shared_io=True)


def test_job_envs_send_secrets_only_as_references():
    """Declared plain vars pass by value; mapped secrets become value_from refs with no value; settings win."""
    opts = parse_options(["HF_HOME=/mnt/hf", "MODE=profile"], ["HF_TOKEN=hf-token"], [], None)
    envs = job_envs(opts, {"MODE": "declared", "HF_TOKEN": "hf_local_value", "RUN": "7"})
    assert envs == [
        {"name": "HF_HOME", "value": "/mnt/hf"},
        {"name": "MODE", "value": "profile"},
        {"name": "RUN", "value": "7"},
        {"name": "HF_TOKEN", "value_from": {"secret_name_ref": "hf-token"}},
    ]
    assert "hf_local_value" not in repr(envs)


def test_unmapped_declared_secret_is_refused_with_the_fix():
    """A workflow-declared secret without a lepton-secrets mapping stops the run and names the flag to add."""
    opts = parse_options([], [], [], None)
    with pytest.raises(ConfigError, match="--lepton-secrets AWS_SECRET_ACCESS_KEY=AWS_SECRET_ACCESS_KEY"):
        job_envs(opts, {"AWS_SECRET_ACCESS_KEY": "abcdefgh", "PATHS": "x"})


def test_leak_detection_and_redaction():
    """Local secret values (>= 6 chars) are found in a spec text and replaced by *** in logs; short ones ignored."""
    environ = {"HF_TOKEN": "hf_abcdef123", "API_KEY": "hf_abcdef", "MY_KEY": "1", "HOME": "/root"}
    text = "token=hf_abcdef123 key=hf_abcdef home=/root n=1"
    assert leaked_secret_names(text, environ) == ["API_KEY", "HF_TOKEN"]
    assert redact(text, environ) == "token=*** key=*** home=/root n=1"


def test_expand_vars_in_settings():
    """$VAR and ${VAR} expand from the environment, $$ is a literal $, an unset variable names the setting."""
    from snakemake_executor_plugin_lepton.config import expand_vars

    env = {"WS": "/mnt/ws", "FROM": "node-nfs:amlfs"}
    assert expand_vars("/vol:${WS}:$FROM", "lepton-mounts", env) == "/vol:/mnt/ws:node-nfs:amlfs"
    assert expand_vars("PATH=$$PATH:/x", "lepton-env-vars", env) == "PATH=$PATH:/x"
    with pytest.raises(ConfigError, match=r"lepton-shared-mount: '\$NOPE/x' uses \$NOPE, which is not set"):
        expand_vars("$NOPE/x", "lepton-shared-mount", env)
