"""A throwaway S3 API for the benchmarks: moto's server on 127.0.0.1 with one empty bucket."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def moto_bucket(bucket: str) -> Iterator[dict[str, Any]]:
    """Storage options (endpoint and fake credentials) of a fresh moto server holding ``bucket``."""
    from moto.server import ThreadedMotoServer

    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {"endpoint_url": f"http://{host}:{port}", "key": "bench", "secret": "bench"}
    import boto3

    boto3.client("s3", endpoint_url=options["endpoint_url"], region_name="us-east-1").create_bucket(Bucket=bucket)
    try:
        yield options
    finally:
        server.stop()
