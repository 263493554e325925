"""Wait for the sandbox's S3 server and create its buckets (idempotent).

Usage: s3_buckets.py ENDPOINT ACCESS_KEY_FILE SECRET_KEY_FILE LOCKED_BUCKET PLAIN_BUCKET
LOCKED_BUCKET is created with Object Lock enabled (versioning on, no default retention: objects carry their own);
PLAIN_BUCKET without it, for the "bucket without Object Lock" path.
"""

import sys
import time

import boto3
import botocore.config
import botocore.exceptions


def main(endpoint, access_file, secret_file, locked, plain):
    with open(access_file) as handle:
        access = handle.read().strip()
    with open(secret_file) as handle:
        secret = handle.read().strip()
    s3 = boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=access, aws_secret_access_key=secret,
        config=botocore.config.Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
    deadline = time.time() + 60
    while True:
        try:
            existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
            break
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            if time.time() > deadline:
                sys.exit("sandbox: the S3 server at %s did not answer: %s" % (endpoint, exc))
            time.sleep(0.5)
    if locked not in existing:
        s3.create_bucket(Bucket=locked, ObjectLockEnabledForBucket=True)
    if plain not in existing:
        s3.create_bucket(Bucket=plain)
    conf = s3.get_object_lock_configuration(Bucket=locked)["ObjectLockConfiguration"]
    if conf.get("ObjectLockEnabled") != "Enabled":
        sys.exit("sandbox: bucket %s was created without Object Lock" % locked)


if __name__ == "__main__":
    main(*sys.argv[1:6])
