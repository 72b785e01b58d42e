"""Starts moto's S3/IAM server for the tests, with IAM policies enforced.

moto re-signs requests from a decoded URL, so a query value holding '/' (a LIST with
prefix=a/b/ or delimiter=/) fails with SignatureDoesNotMatch although the client signed it
correctly (getmoto/moto#5948). Every S3 client encodes '/' as %2F in the query, as SigV4
requires; this launcher re-encodes the query the same way before moto checks the signature.
It changes nothing else.

usage: python3 moto_server.py HOST PORT
"""
import sys
import urllib.parse

from moto.iam import access_control

_original_init = access_control.IAMRequestBase.__init__


def _encode(v: str) -> str:
    return urllib.parse.quote(v, safe="-_.~")


def _patched_init(self, account_id, method, path, data, body, headers, action):
    if "?" in path:
        base, query = path.split("?", 1)
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        path = base + "?" + "&".join(f"{_encode(k)}={_encode(v)}" for k, v in pairs)
    _original_init(self, account_id, method, path, data, body, headers, action)


access_control.IAMRequestBase.__init__ = _patched_init

from moto.server import main  # noqa: E402

if __name__ == "__main__":
    host, port = sys.argv[1], sys.argv[2]
    sys.exit(main(["-H", host, "-p", port]))
