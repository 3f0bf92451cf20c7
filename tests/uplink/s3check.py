#!/usr/bin/env python3
"""Independent checker for the uplink tests: talks to the S3 server with boto3 (not with
branchrec's own client) and prints JSON.

usage: s3check.py ENDPOINT CA_FILE CMD BUCKET [ARGS]
  mkbucket BUCKET            create the bucket with Object Lock enabled
  objects BUCKET             every object: key, size, sha256 of the body, legal hold
  uploads BUCKET             multipart uploads in progress
  put BUCKET KEY FILE        put a fixture object
  dump BUCKET DIR            every object's bytes into DIR (key with / as %2F); prints the keys
"""
import hashlib
import json
import sys

import boto3
import urllib3

urllib3.disable_warnings()
from botocore.config import Config

endpoint, ca, cmd, bucket = sys.argv[1:5]
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    aws_access_key_id="testing",
    aws_secret_access_key="testing",
    region_name="us-east-1",
    verify=False if ca == "-" else ca,
    config=Config(retries={"max_attempts": 2}, s3={"addressing_style": "path"}),
)
if cmd == "mkbucket":
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    print("{}")
elif cmd == "objects":
    out = []
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    for page in pages:
        for o in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
            try:
                hold = s3.get_object_legal_hold(Bucket=bucket, Key=o["Key"])["LegalHold"]["Status"]
            except Exception:
                hold = None
            out.append({"key": o["Key"], "size": o["Size"],
                        "sha256": hashlib.sha256(body).hexdigest(), "legal_hold": hold,
                        "body": body.decode() if o["Key"].endswith(".json") else None})
    print(json.dumps(out))
elif cmd == "uploads":
    r = s3.list_multipart_uploads(Bucket=bucket)
    print(json.dumps([{"key": u["Key"], "upload_id": u["UploadId"]} for u in r.get("Uploads", [])]))
elif cmd == "put":
    key, path = sys.argv[5:7]
    with open(path, "rb") as f:
        s3.put_object(Bucket=bucket, Key=key, Body=f.read())
    print("{}")
elif cmd == "dump":
    import os
    d = sys.argv[5]
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
            with open(os.path.join(d, o["Key"].replace("/", "%2F")), "wb") as f:
                f.write(body)
            keys.append(o["Key"])
    print(json.dumps(keys))
else:
    sys.exit("unknown command " + cmd)
