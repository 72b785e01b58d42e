"""Creates the bucket, objects and IAM users the permission tests need, then turns IAM
enforcement on. Prints `export` lines with each user's keys.

Buckets: BUCKET, BUCKET-versioned (versioning on), BUCKET-locked (Object Lock, a default
retention).

Users (the policies are the ones `pailfs check` prints, or deliberately less):
  FULL     exactly the full-access policy on the three buckets
  ROSUB    read-only, objects restricted to path/to/subfolder/*
  WO       may only write (PutObject)
  ADMIN    everything: what the tests look at (versions, uploads), never a mount
  PARTIAL  lists, reads and deletes everywhere, but may only write pailfs's probe objects
           under partial/ (so a mount there is read-write and real writes are refused)

usage: python3 moto_setup.py ENDPOINT BUCKET
"""
import json
import sys
import urllib.request

import boto3

endpoint, bucket = sys.argv[1], sys.argv[2]
kw = dict(
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="testing",
    aws_secret_access_key="testing",
)
s3 = boto3.client("s3", **kw)
iam = boto3.client("iam", **kw)

s3.create_bucket(Bucket=bucket)
# The buckets users bring from AWS: one with versioning (every PUT and DELETE leaves a version
# or a delete marker), one with Object Lock and a default retention (every PUT must carry a
# Content-MD5 or a checksum).
versioned, locked = f"{bucket}-versioned", f"{bucket}-locked"
s3.create_bucket(Bucket=versioned)
s3.put_bucket_versioning(Bucket=versioned, VersioningConfiguration={"Status": "Enabled"})
s3.create_bucket(Bucket=locked, ObjectLockEnabledForBucket=True)
s3.put_object_lock_configuration(
    Bucket=locked,
    ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}},
    },
)
s3.put_object(Bucket=bucket, Key="path/to/subfolder/hello.txt", Body=b"hello from the subfolder\n")
s3.put_object(Bucket=bucket, Key="root.txt", Body=b"at the root\n")
s3.put_object(Bucket=bucket, Key="partial/doc.txt", Body=b"version 1")

B = f"arn:aws:s3:::{bucket}"


def stmt(actions, resource):
    return {"Effect": "Allow", "Action": actions, "Resource": resource}


policies = {
    "FULL": [
        stmt(["s3:ListBucket", "s3:GetBucketLocation"], [B, f"{B}-versioned", f"{B}-locked"]),
        stmt(
            ["s3:PutObject", "s3:PutObjectAcl", "s3:GetObject", "s3:GetObjectAcl", "s3:DeleteObject"],
            [f"{B}/*", f"{B}-versioned/*", f"{B}-locked/*"],
        ),
    ],
    "ROSUB": [
        stmt(["s3:ListBucket", "s3:GetBucketLocation"], B),
        stmt(["s3:GetObject"], f"{B}/path/to/subfolder/*"),
    ],
    "WO": [stmt(["s3:PutObject"], f"{B}/*")],
    "NODEL": [
        stmt(["s3:ListBucket", "s3:GetBucketLocation"], B),
        stmt(["s3:PutObject", "s3:GetObject"], f"{B}/*"),
    ],
    # Not a pailfs user: the tests' own eyes, for what FULL may not see (versions, uploads).
    "ADMIN": [stmt(["s3:*"], "*")],
    "PARTIAL": [
        stmt(["s3:ListBucket", "s3:GetBucketLocation"], B),
        stmt(["s3:GetObject", "s3:DeleteObject"], f"{B}/*"),
        stmt(["s3:PutObject"], f"{B}/partial/.pailfs-*"),
    ],
}

lines = [
    f"export PAILFS_MOTO_ENDPOINT={endpoint}",
    f"export PAILFS_MOTO_BUCKET={bucket}",
    f"export PAILFS_MOTO_VERSIONED_BUCKET={versioned}",
    f"export PAILFS_MOTO_LOCKED_BUCKET={locked}",
]
for name, statements in policies.items():
    user = f"pailfs-{name.lower()}"
    iam.create_user(UserName=user)
    iam.put_user_policy(
        UserName=user,
        PolicyName=f"{user}-policy",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}),
    )
    key = iam.create_access_key(UserName=user)["AccessKey"]
    lines.append(f"export PAILFS_MOTO_{name}_KEY={key['AccessKeyId']}")
    lines.append(f"export PAILFS_MOTO_{name}_SECRET={key['SecretAccessKey']}")

# From now on every request is authenticated and checked against these policies.
req = urllib.request.Request(
    f"{endpoint}/moto-api/reset-auth",
    data=b"0",
    method="POST",
    headers={"Content-Type": "text/plain"},
)
urllib.request.urlopen(req).read()
print("\n".join(lines))
