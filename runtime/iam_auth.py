"""IAM database authentication: the password of every new connection is an RDS auth token.

A token is signed here, with the Lambda's own credentials (AWS Signature Version 4, no call
to AWS: boto3's rds client `generate_db_auth_token`), for one host, port, user and region,
and RDS accepts it for 15 minutes
(https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/UsingWithRDS.IAMDBAuth.Connecting.html).
It is checked at login only: a connection once open is not affected by its token's age. So
one token is kept and handed to each new connection until REFRESH_AFTER_S, when the next new
connection gets a newly signed one (every token handed out has five minutes or more left);
a refused login discards it at once (IamTokens.expire).

The token is a credential: it never enters a URL, a log line or an exception's text; the
engine's `do_connect` event puts it in the driver's connect parameters (runtime.config).
boto3 is imported on the first signature only: a Lambda with password authentication never
loads it, and one with IAM authentication loads it on its first connection.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from runtime.aws_limits import RDS_IAM_TOKEN_SECONDS
from runtime.errors import SetupError

# A token is signed anew once it is this old: a connection may take a while to open after
# being handed its token, and the clocks of the Lambda and RDS need not agree to the second.
REFRESH_AFTER_S = RDS_IAM_TOKEN_SECONDS * 2 / 3

# (host, port, user, region) -> a token.
Signer = Callable[[str, int, str, str], str]


class TokenError(SetupError):
    """No token could be signed (no credentials, no boto3): says what to fix."""


class BotoSigner:
    """Signs with boto3's rds client (one per region, made on the first signature), of a
    session of its own: boto3's default session keeps whatever credentials it resolved
    first, whoever made it."""

    def __init__(self) -> None:
        self._clients: dict[str, Any] = {}

    def __call__(self, host: str, port: int, user: str, region: str) -> str:
        try:
            import boto3  # only here: a Lambda without IAM authentication never loads it
            import botocore.exceptions
        except ImportError:
            raise TokenError(
                "IAM database authentication needs boto3 to sign its login token "
                "(the Lambda runtime provides it; elsewhere: pip install boto3)"
            ) from None
        try:
            client = self._clients.get(region)
            if client is None:
                client = self._clients[region] = boto3.session.Session().client("rds", region_name=region)
            token: str = client.generate_db_auth_token(
                DBHostname=host, Port=port, DBUsername=user, Region=region
            )
        except botocore.exceptions.NoCredentialsError:
            raise TokenError(
                "IAM database authentication: no AWS credentials to sign the login token with "
                "(on Lambda the function's execution role provides them; elsewhere set AWS_PROFILE, "
                "or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            ) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise TokenError(
                f"IAM database authentication: the login token could not be signed: {type(exc).__name__}: {exc}"
            ) from None
        return token


class IamTokens:
    """The login token of one database user, kept until REFRESH_AFTER_S (clock: seconds,
    time.monotonic by default) and signed by `sign` (BotoSigner by default)."""

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        region: str,
        *,
        sign: Signer | None = None,
        clock: Callable[[], float] = time.monotonic,
        refresh_after_s: float = REFRESH_AFTER_S,
    ) -> None:
        self.host, self.port, self.user, self.region = host, port, user, region
        self._sign: Signer = sign if sign is not None else BotoSigner()
        self._clock = clock
        self.refresh_after_s = refresh_after_s
        self._token: str | None = None
        self._signed_at = 0.0
        self.signed = 0  # how many tokens were signed (for tests and diagnostics)
        self._lock = threading.Lock()  # the local tools open connections from several threads

    def token(self) -> str:
        """The token for a new connection: the kept one, or a new one once it is old."""
        with self._lock:
            now = self._clock()
            if self._token is None or now - self._signed_at >= self.refresh_after_s:
                token = self._sign(self.host, self.port, self.user, self.region)
                if not isinstance(token, str) or not token:
                    raise TokenError("IAM database authentication: the signer returned no token")
                self._token, self._signed_at = token, now
                self.signed += 1
            return self._token

    def expire(self) -> None:
        """Discard the kept token (the database refused it): the next connection signs anew."""
        with self._lock:
            self._token = None

    def __repr__(self) -> str:  # never the token
        return f"IamTokens({self.user}@{self.host}:{self.port}, region {self.region})"
