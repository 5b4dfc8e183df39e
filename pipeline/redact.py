"""Credentials in URLs (`scheme://user:password@host/...`): found, split off and redacted.

A URL given in a config (`llm.base_url`) may carry HTTP Basic credentials. They are split off when the config is
loaded (`pipeline.config`): the config keeps the bare URL, so nothing saved or printed (config.yaml, runs.jsonl,
console messages, Ray's logs) can hold them, and only the LLM client is given them (as an Authorization header).
`redact` is the second line: it blanks credentials in any text about to be written, and publish refuses a file
in which `URL_CREDENTIALS` finds any.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

# scheme://userinfo@ where userinfo holds no '/', '@' or whitespace (RFC 3986: no '/' before the host)
URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]{1,15}://)([^\s/@'\"<>]+)@")
URL_CREDENTIALS_BYTES = re.compile(URL_CREDENTIALS.pattern.encode())


def split_credentials(url: str) -> tuple[str, str | None]:
    """`http://u:p@host:1/v1` -> (`http://host:1/v1`, `u:p`); a URL without credentials -> (url, None)."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL at all: leave it to the config's own validation (its credentials still redacted)
        return redact(url), None
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=host)), userinfo


def redact(text: str) -> str:
    """`text` with the userinfo of every URL in it replaced by `***`."""
    return URL_CREDENTIALS.sub(r"\1***@", text)


def holds_credentials(data: bytes) -> bool:
    """Whether any URL with credentials (other than the redacted `***`) occurs in `data`."""
    return any(m.group(2) != b"***" for m in URL_CREDENTIALS_BYTES.finditer(data))
