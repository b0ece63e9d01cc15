"""Credentials kept out of what a run records (config.yaml, stage records, logs, model cards,
sweep records): `scrub(value)` masks the user-info of URLs (`https://user:key@host`), the values
of secret-looking URL query parameters (`?api_key=...`) and strings shaped like the API tokens of
common providers (`sk-...`, `hf_...`, `ghp_...`, ...), in a string or anywhere inside lists and
dicts. Keys belong in the environment (the `api_key_env` parameter names the variable), where
nothing of a run records them. The pipeline hands a parameter value that holds a credential to its
notebook kernels in their environment (`hand_over`, `take_back`), so that the executed notebooks
it writes hold only the masked value. This module imports nothing of gdpolib, so every layer may
use it.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Mapping

MASK = "***"
HANDOVER_ENV = "GDPO_SECRET_PARAMETERS"
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@?#]+@")
_SECRET_QUERY = re.compile(
    r"(?i)([?&][^=&\s#]*(?:token|key|secret|password|passwd|pwd|auth|signature|sig)[^=&\s#]*=)"
    r"[^&\s#]+")
# Provider tokens, each as its provider shapes it (a prefix, then a body of a known alphabet and
# length: so that a path such as hf_checkpoints/ is not taken for one): OpenAI and compatible
# APIs, Anthropic, Hugging Face, GitHub, Slack, AWS access keys, Google API keys; then JSON web
# tokens and bearer headers.
_TOKENS = re.compile(
    r"\b(sk-(?:ant-|proj-)?)[A-Za-z0-9_-]{20,}"
    r"|\b(hf_)[A-Za-z0-9]{30,}"
    r"|\b(gh[pousr]_)[A-Za-z0-9]{30,}|\b(github_pat_)[A-Za-z0-9_]{22,}"
    r"|\b(xox[abprs]-)[A-Za-z0-9-]{10,}"
    r"|\b(AKIA)[0-9A-Z]{16}\b|\b(AIza)[0-9A-Za-z_-]{35}"
    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
    r"|(?i:\b(bearer\s+))[A-Za-z0-9._~+/=-]{12,}")


def _token(match: re.Match) -> str:
    """A token's prefix (sk-, hf_, Bearer ...) kept, its body masked."""
    prefix = next((g for g in match.groups() if g), "")
    return prefix + MASK


def scrub_text(text: str) -> str:
    """`text` with every credential-looking part masked (MASK)."""
    text = _USERINFO.sub(lambda m: m.group(1) + MASK + "@", text)
    text = _SECRET_QUERY.sub(lambda m: m.group(1) + MASK, text)
    return _TOKENS.sub(_token, text)


def scrub(value: Any) -> Any:
    """`value` with every string in it scrubbed (scrub_text); lists, tuples and dicts are
    rebuilt, other values returned as they are."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(scrub(v) for v in value)
    return value


def hand_over(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """`parameters` scrubbed; the values that held a credential are put in this process's
    environment (HANDOVER_ENV), which the processes it starts inherit and nothing records."""
    secrets = {k: v for k, v in parameters.items() if scrub(v) != v}
    if secrets:
        os.environ[HANDOVER_ENV] = json.dumps(secrets)
    return scrub(dict(parameters))


def take_back(values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` with each value that hand_over masked replaced by the real one."""
    secrets = json.loads(os.environ.get(HANDOVER_ENV) or "{}")
    return {k: secrets[k] if k in secrets and v == scrub(secrets[k]) else v
            for k, v in values.items()}
