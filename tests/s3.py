"""A throwaway S3 server owned by the tests: moto's standalone server on a local address.

Clients find it as any boto3 client finds an endpoint: ``AWS_ENDPOINT_URL`` (boto3 >= 1.28),
with dummy credentials. The objects live in this process's memory (moto's backends), so they
survive :meth:`MotoS3.stop` and :meth:`MotoS3.start` on the same port: a store that goes down
and comes back.
"""

from __future__ import annotations

import logging
import time
import urllib.request
from types import TracebackType
from typing import Any

from pg import free_port

__all__ = ["BUCKET", "MotoS3"]

BUCKET = "ganhpo-test"


class MotoS3:
    """moto's S3 server on ``host``:``port`` (127.0.0.1 and a free port by default)."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port()
        self._server: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """What a client process needs to reach this server (dummy credentials)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "ganhpo-test-key",
            "AWS_SECRET_ACCESS_KEY": "ganhpo-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def client(self) -> Any:
        import boto3

        env = self.env()
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        )

    def objects(self, prefix: str = "", bucket: str = BUCKET) -> list[str]:
        """The keys under ``prefix`` in ``bucket``."""
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def start(self) -> MotoS3:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request

        self._server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        self._server.start()
        deadline = time.monotonic() + 30
        while True:  # up when it answers
            try:
                self.client().list_buckets()
                return self
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> MotoS3:
        self.start()
        # moto keeps its objects in this process, across servers: a fresh, empty S3 each time.
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=30).close()
        self.client().create_bucket(Bucket=BUCKET)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
