"""An S3-compatible server on loopback: moto in server mode, with real authentication.

``moto_server`` runs from a virtualenv of its own (``scripts/requirements-s3.txt``:
moto needs a newer ``cryptography`` than the one Odoo pins). Once it listens, a
user is created through its IAM API with a policy allowing ``s3:*`` and an access
key, then authentication is switched on: from then on, requests signed with any
other key or a wrong secret are refused as AWS refuses them
(``InvalidAccessKeyId``, ``SignatureDoesNotMatch``).
"""

import json
import subprocess
import urllib.request
from pathlib import Path

from . import machine, util
from .service import ProcessService, ServiceError

REQUIREMENTS = Path(__file__).resolve().parent.parent / "scripts" / "requirements-s3.txt"
REGION = "us-east-1"
START_TIMEOUT_S = 60

# Run with the moto virtualenv's python (boto3 comes with moto); prints the key.
_SETUP = """
import json, sys
import boto3
iam = boto3.client("iam", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
iam.create_user(UserName="saas-backup")
iam.put_user_policy(UserName="saas-backup", PolicyName="s3", PolicyDocument=json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
key = iam.create_access_key(UserName="saas-backup")["AccessKey"]
print(json.dumps({"access_key": key["AccessKeyId"], "secret_key": key["SecretAccessKey"]}))
"""


class S3Server(ProcessService):
    """moto's S3 on ``127.0.0.1:port``: ``endpoint_url``, ``access_key``, ``secret_key``."""

    name = "s3"
    log_name = "s3.log"
    stop_timeout = 10.0

    def __init__(self, workdir=None, *, port=None, auth=True):
        super().__init__(workdir)
        self.port = port or util.free_port()
        self.auth = auth
        self.access_key = "test-access-key"
        self.secret_key = "test-secret-key"  # noqa: S105 (moto without auth)
        self.region = REGION
        self.venv = None

    @property
    def endpoint_url(self):
        return f"http://{util.LOOPBACK}:{self.port}"

    def _start(self):
        self.venv = machine.ensure_venv("s3", REQUIREMENTS)
        self.spawn(
            [str(self.venv / "bin" / "moto_server"), "-H", util.LOOPBACK, "-p", str(self.port)]
        )

        def listening():
            self.check_alive()
            return util.port_open(self.port)

        try:
            util.wait_until(listening, START_TIMEOUT_S, what=f"moto on port {self.port}")
        except TimeoutError as exc:
            raise ServiceError(f"{exc}:\n{self.log_tail()}") from None
        if self.auth:
            self._enable_auth()

    def _enable_auth(self):
        done = subprocess.run(
            [str(self.venv / "bin" / "python"), "-c", _SETUP, self.endpoint_url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode:
            raise ServiceError(f"moto IAM setup failed:\n{done.stderr[-2000:]}")
        keys = json.loads(done.stdout.strip().splitlines()[-1])
        self.access_key, self.secret_key = keys["access_key"], keys["secret_key"]
        request = urllib.request.Request(  # noqa: S310 (our own loopback URL)
            f"{self.endpoint_url}/moto-api/reset-auth",
            data=b"0",
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            answer.read()

    def settings(self, bucket, **overrides):
        """Keyword arguments of ``remote.storage_s3.S3Storage`` for ``bucket``."""
        values = {
            "endpoint_url": self.endpoint_url,
            "bucket": bucket,
            "region": self.region,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
        }
        values.update(overrides)
        return values
