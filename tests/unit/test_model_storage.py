"""Loading from S3 (through moto) and choosing the storage from MODEL_URI."""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from shared.errors import ModelUnavailable
from shared.model import load_model
from shared.model.artifact import save_model
from shared.model.card import ARTIFACT_FILE, CARD_FILE
from shared.model.storage import LocalDirectory, S3Prefix, storage_for
from shared.model.synthetic import generate_ads
from shared.model.training import train_model

REGION = "us-east-1"


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("model")
    trained = train_model(generate_ads(1000, seed=11), date="2024-03-04", progress=False)
    save_model(directory, trained.pipeline, trained.draft)
    return directory


@pytest.fixture
def s3():
    with mock_aws():
        yield boto3.client("s3", region_name=REGION)


def _upload(
    s3, directory: Path, bucket: str, prefix: str, files=(CARD_FILE, ARTIFACT_FILE)
) -> None:
    s3.create_bucket(Bucket=bucket)
    for name in files:
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=(directory / name).read_bytes())


def test_a_model_loads_from_an_s3_prefix(s3, saved):
    bucket = f"models-{uuid.uuid4().hex[:12]}"
    _upload(s3, saved, bucket, "moderation/v1")

    model = load_model(f"s3://{bucket}/moderation/v1", s3_client=s3)

    assert model.version.startswith("moderation-2024-03-04-")


def test_a_model_loads_from_s3_with_the_default_client(s3, saved, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    bucket = f"models-{uuid.uuid4().hex[:12]}"
    _upload(s3, saved, bucket, "current")

    model = load_model(f"s3://{bucket}/current/")

    assert model.version.startswith("moderation-")


def test_a_missing_s3_artifact_makes_the_model_unavailable(s3, saved):
    bucket = f"models-{uuid.uuid4().hex[:12]}"
    _upload(s3, saved, bucket, "half-uploaded", files=(CARD_FILE,))

    with pytest.raises(
        ModelUnavailable, match=rf"s3://{bucket}/half-uploaded/model\.skops: NoSuchKey"
    ):
        load_model(f"s3://{bucket}/half-uploaded", s3_client=s3)


def test_a_missing_s3_bucket_makes_the_model_unavailable(s3):
    bucket = f"absent-{uuid.uuid4().hex[:12]}"

    with pytest.raises(ModelUnavailable, match="NoSuchBucket"):
        load_model(f"s3://{bucket}/models", s3_client=s3)


def test_a_tampered_s3_artifact_is_refused(s3, saved):
    bucket = f"models-{uuid.uuid4().hex[:12]}"
    _upload(s3, saved, bucket, "v1", files=(CARD_FILE,))
    s3.put_object(Bucket=bucket, Key=f"v1/{ARTIFACT_FILE}", Body=b"PK\x03\x04 not the model")

    with pytest.raises(ModelUnavailable, match="sha256"):
        load_model(f"s3://{bucket}/v1", s3_client=s3)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/a/b/", S3Prefix("bucket", "a/b")),
        ("s3://bucket", S3Prefix("bucket", "")),
        ("var/models/default", LocalDirectory(Path("var/models/default"))),
        ("file:///models/x", LocalDirectory(Path("/models/x"))),
        ("file://localhost/models/x", LocalDirectory(Path("/models/x"))),
        # As Path.as_uri() writes a path with a space or a non-ASCII letter.
        ("file:///my%20models/mod%C3%A8le", LocalDirectory(Path("/my models/modèle"))),
    ],
)
def test_model_uri_names_a_local_directory_or_an_s3_prefix(uri, expected):
    storage = storage_for(uri)

    assert storage == expected


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "s3:///no-bucket",
        "file://models/x",
        "s3://[models/default",  # urlparse raised ValueError: a 500, not a 503
        "s3://bucket/models#v2",  # read as s3://bucket/models
        "s3://bucket/models?v2",
        "file:///models/x#v2",
    ],
)
def test_an_unusable_model_uri_makes_the_model_unavailable(uri):
    with pytest.raises(ModelUnavailable, match="expected MODEL_URI"):
        storage_for(uri)


def test_a_file_name_the_os_cannot_take_makes_the_model_unavailable(tmp_path):
    # A card naming "model\x00.skops": open() raises ValueError, which was a 500 and a
    # load retried by every caller, not the 503 and back-off of an unavailable model.
    with pytest.raises(ModelUnavailable, match="cannot read"):
        LocalDirectory(tmp_path).read("model\x00.skops")


def test_a_model_read_from_an_s3_endpoint_that_never_answers_gives_up_within_half_a_minute(
    monkeypatch,
):
    # The request that retries a failed load waits for it: with botocore's legacy retries
    # and a 30 s read timeout, one read took 120 s against such an endpoint.
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{silent.getsockname()[1]}")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
        monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
        started = time.monotonic()

        with pytest.raises(ModelUnavailable, match="cannot reach s3://bucket/v1/"):
            S3Prefix(bucket="bucket", prefix="v1").read(CARD_FILE)

        assert time.monotonic() - started < 30


def test_an_s3_endpoint_without_its_scheme_makes_the_model_unavailable(monkeypatch):
    # botocore raises ValueError("Invalid endpoint: localhost:9000"): it escaped as a 500,
    # a traceback at start-up, and a load tried again by every caller.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "localhost:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)

    with pytest.raises(ModelUnavailable, match="Invalid endpoint: localhost:9000"):
        load_model("s3://bucket/v1")
