"""``vadnet health``: a gRPC health probe. Exit 0 when SERVING, 1 otherwise (k8s exec probe)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .client import add_connection_arguments

    add_connection_arguments(parser)
    parser.add_argument(
        "--service", default="", help="service to check (default: the whole server)"
    )
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")


def run(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from .client import VadClient, connection_from_args

    with VadClient(**connection_from_args(args)) as client:
        stub = health_pb2_grpc.HealthStub(client.channel)
        try:
            resp = stub.Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as e:
            sys.stderr.write(f"vadnet health: {e.code().name}: {e.details()}\n")
            return 1
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
    sys.stdout.write(name + "\n")
    return 0 if resp.status == health_pb2.HealthCheckResponse.SERVING else 1
