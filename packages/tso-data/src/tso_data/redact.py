"""Keep secrets out of everything the catalog stores and the CLI prints.

A server may echo the API key it was sent in an error body (OpenAI's 401 says
"Incorrect API key provided: sk-..."); that text would otherwise reach
``failures.error``, ``judgments.raw_text`` and the console. Every such text goes through
:func:`redact` first: the exact keys this process sent (registered with
:func:`register_secret` where they are read from the environment) and anything shaped like
a key or an ``Authorization`` value become ``[REDACTED]``.
"""

from __future__ import annotations

import re

REDACTED = "[REDACTED]"
# Shorter "secrets" would redact ordinary words; real API keys are much longer.
_MIN_SECRET_CHARS = 8
_secrets: set[str] = set()

# Key-shaped tokens and the values of credential headers/fields, wherever they appear.
_PATTERNS = (
    # OpenAI-style keys (sk-..., sk-proj-...), Anthropic, Hugging Face, GitHub, AWS access keys
    re.compile(r"\b(?:sk|rk|pk)-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"\bsk-ant-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"\bhf_[A-Za-z0-9]{16,}"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    # Authorization: Bearer xyz / Authorization=Basic xyz / "authorization": "xyz"
    re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(?:(?:bearer|basic|token)\s+)?[^\s\"',;}]+"),
    re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=\-]{8,}"),
    # api_key=..., "api-key": "...", x-api-key: ...
    re.compile(r"(?i)((?:x-)?api[_\-]?key[\"']?\s*[:=]\s*[\"']?)[^\s\"',;}]+"),
)


def register_secret(value: str | None) -> None:
    """Remember a secret this process uses (e.g. the API key it sends) so that
    :func:`redact` removes it from any text, whatever its shape."""
    if value and len(value) >= _MIN_SECRET_CHARS:
        _secrets.add(value)


def redact(text: str) -> str:
    """``text`` without registered secrets, key-shaped tokens or credential values.

    >>> redact("Error code: 401 - Incorrect API key provided: sk-abc123def456ghi. See docs.")
    'Error code: 401 - Incorrect API key provided: [REDACTED]. See docs.'
    >>> redact("headers: {'Authorization': 'Bearer abc.def-123456'}")
    "headers: {'Authorization': '[REDACTED]'}"
    >>> register_secret("s3cr3t-value-without-a-known-shape")
    >>> redact("the server said: bad token s3cr3t-value-without-a-known-shape")
    'the server said: bad token [REDACTED]'
    >>> redact("Score: 7 out of 10")
    'Score: 7 out of 10'
    """
    text = strip_secrets(text) or text
    for pattern in _PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
        else:
            text = pattern.sub(REDACTED, text)
    return text


def strip_secrets(text: str | None) -> str | None:
    """Only the registered secrets removed: for model output (a judge's reply), where a
    key-shaped pattern could be ordinary content.

    >>> strip_secrets(None) is None
    True
    """
    if not text:
        return text
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text
