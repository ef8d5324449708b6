"""AWS clients for the tools: endpoint, region and credentials, and the lookups every command
needs (a queue's URL and ARN, a table's stream), with errors an operator can act on.

The standard chain applies: `--endpoint-url` or AWS_ENDPOINT_URL, `--region` or AWS_REGION /
AWS_DEFAULT_REGION / the profile, credentials from the environment, the shared files, SSO or
an instance role. Nothing is looked up until a command needs it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

USAGE = 2  # exit code: bad command line or configuration, a missing resource, no credentials
INCOMPLETE = 1  # exit code: the command ran but could not finish its work


class ToolError(Exception):
    """An error the command reports in one line and exits with `exit_code`."""

    exit_code = USAGE

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str((response.get("Error") or {}).get("Code") or "")


def http_status(exc: BaseException) -> int:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return 0
    return int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)


_MISSING_QUEUE = ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")


@dataclass
class Aws:
    """Creates clients lazily; one per service."""

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    _session: Any = field(default=None, repr=False)
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)

    def _given_region(self) -> str | None:
        """--region, else AWS_REGION (what the Lambda runtime and the newer SDKs read)."""
        return self.region or os.environ.get("AWS_REGION")

    @property
    def session(self) -> Any:
        if self._session is None:
            import boto3
            from botocore.exceptions import ProfileNotFound

            # AWS_REGION is what the Lambda runtime and the newer SDKs read; botocore itself
            # only reads AWS_DEFAULT_REGION and the profile, so it is honoured here.
            region = self._given_region() or None
            try:
                self._session = boto3.Session(profile_name=self.profile, region_name=region)
            except ProfileNotFound as exc:
                raise ToolError(str(exc)) from None
            if not self._session.region_name:
                raise ToolError("no AWS region: pass --region or set AWS_REGION")
        return self._session

    @property
    def region_name(self) -> str:
        # Given or in the environment, the region is known without importing boto3 (a worker
        # process of backfill or reconcile that reads an export never needs it); botocore
        # would take the same value (an explicit region, then the environment, then the profile).
        known = self._given_region() or os.environ.get("AWS_DEFAULT_REGION")  # botocore reads the latter
        if known and self._session is None:
            return known
        return str(self.session.region_name)

    def check_credentials(self) -> None:
        if self.session.get_credentials() is None:
            raise ToolError(
                "no AWS credentials found (environment, shared credentials/config files, SSO or "
                "instance role); set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
            )

    def client(self, service: str, *, retries: int | None = None) -> Any:
        key = f"{service}:{retries}"
        if key not in self._clients:
            from botocore.config import Config

            self.check_credentials()
            config = Config(retries={"mode": "standard", "max_attempts": retries or 5})
            kwargs: dict[str, Any] = {"config": config}
            if self.endpoint_url:
                kwargs["endpoint_url"] = self.endpoint_url
            self._clients[key] = self.session.client(service, **kwargs)
        return self._clients[key]

    # -- lookups ---------------------------------------------------------------------------

    def queue_url(self, name: str) -> str:
        sqs = self.client("sqs")
        try:
            return str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
        except Exception as exc:
            if error_code(exc) in _MISSING_QUEUE:
                raise ToolError(f"queue {name!r} does not exist in {self.region_name}") from None
            raise

    def queue_arn(self, url: str) -> str:
        attrs = self.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return str(attrs["Attributes"]["QueueArn"])

    def queue_counts(self, url: str) -> tuple[int, int]:
        """(visible, in flight) as SQS reports them (approximate)."""
        attrs = self.client("sqs").get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return (
            int(attrs.get("ApproximateNumberOfMessages", 0)),
            int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
        )

    def stream_arn(self, table: str) -> str:
        ddb = self.client("dynamodb")
        try:
            desc = ddb.describe_table(TableName=table)["Table"]
        except Exception as exc:
            if error_code(exc) == "ResourceNotFoundException":
                raise ToolError(f"DynamoDB table {table!r} does not exist in {self.region_name}") from None
            raise
        arn = desc.get("LatestStreamArn")
        spec = desc.get("StreamSpecification") or {}
        if not arn or spec.get("StreamEnabled") is False:
            raise ToolError(
                f"DynamoDB table {table!r} has no stream enabled; the Pipe needs one "
                "(stream_enabled = true in the generated Terraform)"
            )
        return str(arn)


def describe_aws_error(exc: BaseException) -> ToolError | None:
    """Turn the botocore errors an operator can fix into ToolErrors (exit 2); None otherwise."""
    from botocore.exceptions import (
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
    )

    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return ToolError(f"no usable AWS credentials: {exc}")
    if isinstance(exc, NoRegionError):
        return ToolError("no AWS region: pass --region or set AWS_REGION")
    if isinstance(exc, EndpointConnectionError):
        return ToolError(f"cannot reach the AWS endpoint: {exc}")
    code = error_code(exc)
    if code in (
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "AccessDenied",
        "AccessDeniedException",
    ):
        return ToolError(f"AWS refused the credentials: {exc}")
    if code in _MISSING_QUEUE:
        return ToolError(f"queue does not exist: {exc}")
    if code == "ResourceNotFoundException":
        return ToolError(f"not found: {exc}")
    return None
