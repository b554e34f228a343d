"""Credentials for object storage: where they come from, and that they never leak.

Sources, the first that applies:
1. `[s3] credentials_file`: a file in the AWS shared-credentials format (so an existing
   `~/.aws/credentials` works as it is), readable by its owner only (mode 0600 or
   stricter; anything else is refused at start, like the node key):

       [default]
       aws_access_key_id = AKIA...
       aws_secret_access_key = ...
       aws_session_token = ...        # optional (temporary credentials)

   The `[default]` section is used, or the file's only section.
2. Otherwise obstore's default chain: the environment (AWS_ACCESS_KEY_ID,
   AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), a web identity token (EKS), the container's
   credentials (ECS), then the instance profile (EC2 IMDSv2).

Never from config.toml in clear: the config has no key that holds a secret. A
`Credentials` object prints as `Credentials(AKIA..., secret hidden)`, and the S3 client
scrubs its values from every message it raises (client.py `_scrub`).
"""

from __future__ import annotations

import configparser
from dataclasses import dataclass, field
from typing import Any

from mirror.errors import ConfigError
from mirror.secretfile import read_private_text


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    session_token: str = field(default="", repr=False)

    def __repr__(self) -> str:
        return f"Credentials({self.access_key_id[:4]}..., secret hidden)"

    __str__ = __repr__

    def secrets(self) -> tuple[str, ...]:
        """The values that must never appear in a message."""
        return tuple(s for s in (self.secret_access_key, self.session_token, self.access_key_id) if len(s) >= 4)

    def __call__(self) -> dict[str, Any]:
        """obstore's credential provider: called by the client, values never copied into
        the store's config (which a careless repr could print)."""
        return {"access_key_id": self.access_key_id, "secret_access_key": self.secret_access_key,
                "token": self.session_token or None, "expires_at": None}


def load_credentials(path: str, key: str = "s3.credentials_file") -> Credentials | None:
    """The credentials in the file at `path` ("" = none: the default chain applies).
    ConfigError names the file and the key, never a value."""
    if not path:
        return None
    text = read_private_text(path, key)
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=path)
    except configparser.Error:
        # The parser's message may quote a line of the file: say where, not what.
        raise ConfigError(f"{path} ({key}): not in the AWS credentials format ([default] with "
                          f"aws_access_key_id and aws_secret_access_key)") from None
    sections = parser.sections()
    name = "default" if "default" in sections else (sections[0] if len(sections) == 1 else None)
    if name is None:
        raise ConfigError(f"{path} ({key}): needs a [default] section (or exactly one section)")
    sec = parser[name]
    access, secret = sec.get("aws_access_key_id", "").strip(), sec.get("aws_secret_access_key", "").strip()
    token = sec.get("aws_session_token", "").strip()
    for what, value in (("aws_access_key_id", access), ("aws_secret_access_key", secret), ("aws_session_token", token)):
        if what != "aws_session_token" and not value:
            raise ConfigError(f"{path} ({key}): [{name}] lacks {what}")
        if value and (not value.isascii() or not value.isprintable() or " " in value):
            raise ConfigError(f"{path} ({key}): [{name}] {what} is malformed")
    return Credentials(access, secret, token)
