"""Where a model lives: a local directory or `s3://bucket/prefix`. Both hand back file bytes.

Any failure to read is `ModelUnavailable`: the model may be there on the next try.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from shared.errors import ModelUnavailable

S3_SCHEME = "s3"
# The request that retries a failed load waits for it: against an endpoint that accepts
# and never answers, two tries (total_max_attempts counts the first) of 10 s without a
# byte each, about 20 s.
_S3_TIMEOUTS = {
    "connect_timeout": 5,
    "read_timeout": 10,
    "retries": {"mode": "standard", "total_max_attempts": 2},
}


class ModelStorage(Protocol):
    def read(self, name: str) -> bytes:
        """The bytes of file `name` of the model; raise ModelUnavailable when unreadable."""
        ...


@dataclass(frozen=True, slots=True)
class LocalDirectory:
    path: Path

    def read(self, name: str) -> bytes:
        try:
            return (self.path / name).read_bytes()
        except FileNotFoundError:
            raise ModelUnavailable(
                f"no {name} in model directory {self.path}: build one with `make model` "
                "or point MODEL_URI at a model directory or s3://bucket/prefix"
            ) from None
        except (OSError, ValueError) as error:
            # ValueError: a name the OS cannot take (an embedded NUL, from a bad card).
            raise ModelUnavailable(f"cannot read {name!r} in {self.path}: {error}") from error


@dataclass(frozen=True, slots=True)
class S3Prefix:
    bucket: str
    prefix: str
    client: Any = None  # a boto3 S3 client; made on first read when None

    def read(self, name: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        key = f"{self.prefix}/{name}" if self.prefix else name
        try:
            response = self._client().get_object(Bucket=self.bucket, Key=key)
            return response["Body"].read()
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "error")
            raise ModelUnavailable(f"cannot read s3://{self.bucket}/{key}: {code}") from error
        except (BotoCoreError, ValueError) as error:
            # ValueError: botocore's word on an endpoint it cannot use, such as an
            # AWS_ENDPOINT_URL without its scheme ("Invalid endpoint: localhost:9000").
            raise ModelUnavailable(f"cannot reach s3://{self.bucket}/{key}: {error}") from error

    def _client(self) -> Any:
        if self.client is not None:
            return self.client
        import boto3
        from botocore.config import Config

        return boto3.client("s3", config=Config(**_S3_TIMEOUTS))


def storage_for(uri: str, s3_client: Any = None) -> ModelStorage:
    """`s3://bucket/prefix` is S3 (through `s3_client` if given); anything else a local path."""
    try:
        parsed = urlparse(uri)
    except ValueError as error:  # an unclosed "[" of an IPv6 host, say
        raise ModelUnavailable(
            f"expected MODEL_URI to be a path or a URI, got {uri!r}: {error}"
        ) from None
    if parsed.scheme in (S3_SCHEME, "file") and ("?" in uri or "#" in uri):
        # urlparse drops what follows them: another prefix's model would load.
        raise ModelUnavailable(
            f"expected MODEL_URI without '?' or '#' (a query or fragment), got {uri!r}"
        )
    if parsed.scheme == S3_SCHEME:
        if not parsed.netloc:
            raise ModelUnavailable(f"expected MODEL_URI s3://bucket/prefix, got {uri!r}")
        return S3Prefix(bucket=parsed.netloc, prefix=parsed.path.strip("/"), client=s3_client)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            # `file://models/x` names host "models": its path would silently be `/x`.
            raise ModelUnavailable(
                f"expected MODEL_URI file:///absolute/path or a plain path, got {uri!r}"
            )
        # A file URI's path is percent-encoded (Path.as_uri() writes a space as %20).
        return LocalDirectory(Path(unquote(parsed.path)))
    if not uri:
        raise ModelUnavailable("expected MODEL_URI to name a model directory or s3://bucket/prefix")
    return LocalDirectory(Path(uri))
