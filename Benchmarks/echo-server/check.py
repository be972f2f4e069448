#!/usr/bin/env python3
"""Smoke test for echo_server with grpcio: `python3 check.py [PORT]` (default 50052).

Calls Predict and Rank with raw bytes and expects them back, and an unknown method to be
UNIMPLEMENTED. Python tops out near 3-4k calls/s; use a native load client to measure speed.
"""
import os
import sys

import grpc


def main() -> None:
    port = sys.argv[1] if len(sys.argv) > 1 else "50052"
    ident = lambda b: b  # noqa: E731 - raw bytes in and out
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        method = lambda name: channel.unary_unary(  # noqa: E731
            f"/recserve.v1.Recommender/{name}", request_serializer=ident, response_deserializer=ident
        )
        for name, payload in [("Predict", os.urandom(1000)), ("Rank", b"hello"), ("Predict", b"")]:
            got = method(name)(payload, timeout=5)
            assert got == payload, f"{name}: got {len(got)} bytes back, sent {len(payload)}"
        try:
            method("SimilarItems")(b"x", timeout=5)
            raise SystemExit("SimilarItems: expected UNIMPLEMENTED, got OK")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNIMPLEMENTED, error
    print("echo server OK")


if __name__ == "__main__":
    main()
