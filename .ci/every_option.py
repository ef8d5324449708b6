"""Write the bundled project with every production option of project.yaml on into DIR and
build it (DIR/build/terraform), for the security review (.ci/checkov) to scan beside the
bundled build: a project KMS key, VPC endpoints for two services, an RDS Proxy with IAM
database authentication (DIR/iam), and with a password secret under a key of its own
(DIR/password). Run with the project's own Python: `python .ci/every_option.py DIR`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
KEY = "arn:aws:kms:ap-northeast-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
SECRET_KEY = "arn:aws:kms:ap-northeast-1:123456789012:key/9999abcd-12ab-34cd-56ef-1234567890ab"


def iam(settings: dict[str, Any]) -> None:
    db = settings["database"]
    db.pop("secret_arn", None)
    db["auth"] = {
        "mode": "iam",
        "host": "legacy-proxy.proxy-c0abcdefghij.ap-northeast-1.rds.amazonaws.com",
        "user": "ddb_sync",
        "dbname": "legacy",
        "resource_id": "prx-0123456789abcdef0",
    }


def password(settings: dict[str, Any]) -> None:
    settings["database"]["secret_kms_key_arn"] = SECRET_KEY


def write(dest: Path, variant: Any) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    shutil.copytree(ROOT / "mappings", dest / "mappings")
    settings = yaml.safe_load((ROOT / "project.yaml").read_text(encoding="utf-8"))
    settings["encryption"] = {"kms_key_arn": KEY}
    settings["database"]["proxy"] = True
    settings["lambda"]["vpc"].update(aws_access="endpoints", endpoint_services=["secretsmanager", "sts"])
    variant(settings)
    (dest / "project.yaml").write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    subprocess.run([sys.executable, "-m", "generator", "build", "--root", str(dest)], check=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: every_option.py DIR")
    for name, variant in (("iam", iam), ("password", password)):
        write(Path(sys.argv[1]) / name, variant)
