#!/usr/bin/env python3
"""Independent checker for the uplink tests: talks to the S3 server with boto3 (not with
branchrec's own client) and prints JSON.

usage: s3check.py ENDPOINT CA_FILE CMD BUCKET [ARGS]
  mkbucket BUCKET            create the bucket with Object Lock enabled
Credentials: S3CHECK_KEY_ID / S3CHECK_SECRET (default: moto's testing/testing).
  objects BUCKET             every object: key, size, sha256 of the body, legal hold
  uploads BUCKET             multipart uploads in progress
  put BUCKET KEY FILE        put a fixture object
  dump BUCKET DIR            every object's bytes into DIR (key with / as %2F); prints the keys
  versions BUCKET PREFIX     every version and delete marker under PREFIX, with its legal hold
  get BUCKET KEY             the object's body as text (null if absent)
  purge BUCKET KEY           delete every version of KEY
"""
import hashlib
import json
import os
import sys

import boto3
import urllib3

urllib3.disable_warnings()
from botocore.config import Config

endpoint, ca, cmd, bucket = sys.argv[1:5]
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    aws_access_key_id=os.environ.get("S3CHECK_KEY_ID", "testing"),
    aws_secret_access_key=os.environ.get("S3CHECK_SECRET", "testing"),
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
elif cmd == "versions":
    prefix = sys.argv[5]
    out = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for v in page.get("Versions", []):
            try:
                hold = s3.get_object_legal_hold(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])["LegalHold"]["Status"]
            except Exception:
                hold = None
            out.append({"key": v["Key"], "version_id": v["VersionId"], "delete_marker": False,
                        "legal_hold": hold})
        for m in page.get("DeleteMarkers", []):
            out.append({"key": m["Key"], "version_id": m["VersionId"], "delete_marker": True,
                        "legal_hold": None})
    print(json.dumps(out))
elif cmd == "get":
    key = sys.argv[5]
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    except s3.exceptions.NoSuchKey:
        body = None
    print(json.dumps({"body": body}))
elif cmd == "purge":
    key = sys.argv[5]
    r = s3.list_object_versions(Bucket=bucket, Prefix=key)
    n = 0
    for v in r.get("Versions", []) + r.get("DeleteMarkers", []):
        if v["Key"] == key:
            s3.delete_object(Bucket=bucket, Key=key, VersionId=v["VersionId"])
            n += 1
    print(json.dumps({"deleted": n}))
else:
    sys.exit("unknown command " + cmd)
