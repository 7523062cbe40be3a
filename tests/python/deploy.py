#!/usr/bin/env python3
"""Calls brine's Fleet.Deploy over mutual TLS, as a CI job written in Python would.

Generates the gRPC stubs from proto/brine/v1/brine.proto with grpcio-tools, calls Deploy with a
`ci` certificate, follows the streamed events and prints one JSON verdict:
{"job_id": ..., "success": ..., "hosts": [{"minion_id": ..., "status": ..., "error": ...}]}.
Exits 0 when every host is unchanged or changed, 1 otherwise, 2 when the call itself failed.
"""
import argparse
import json
import pathlib
import sys
import tempfile

import grpc
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto" / "proto"


def stubs(out: pathlib.Path):
    status = protoc.main([
        "protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        str(PROTO_DIR / "brine" / "v1" / "brine.proto"),
    ])
    if status != 0:
        sys.exit(f"protoc failed with status {status}")
    sys.path.insert(0, str(out))
    from brine.v1 import brine_pb2, brine_pb2_grpc  # noqa: E402 (generated just now)
    return brine_pb2, brine_pb2_grpc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--master", required=True, help="HOST:PORT")
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--role", action="append", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--server-name", default="localhost",
                        help="the name the master's certificate is checked against")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as generated:
        pb, pb_grpc = stubs(pathlib.Path(generated))
        credentials = grpc.ssl_channel_credentials(
            root_certificates=pathlib.Path(args.ca).read_bytes(),
            private_key=pathlib.Path(args.key).read_bytes(),
            certificate_chain=pathlib.Path(args.cert).read_bytes(),
        )
        options = [("grpc.ssl_target_name_override", args.server_name)]
        with grpc.secure_channel(args.master, credentials, options=options) as channel:
            fleet = pb_grpc.FleetStub(channel)
            request = pb.DeployRequest(roles=args.role, image=args.image, timeout_seconds=120)
            verdict = {"job_id": None, "success": False, "hosts": []}
            try:
                for event in fleet.Deploy(request, timeout=300):
                    kind = event.WhichOneof("kind")
                    if kind == "started":
                        verdict["job_id"] = event.started.job_id
                    elif kind == "summary":
                        verdict["hosts"] = [
                            {
                                "minion_id": host.minion_id,
                                "status": pb.HostStatus.Name(host.status),
                                "error": host.error or None,
                            }
                            for host in event.summary.hosts
                        ]
            except grpc.RpcError as err:
                print(json.dumps({"error": f"{err.code().name}: {err.details()}"}))
                return 2
    ok = {"HOST_STATUS_UNCHANGED", "HOST_STATUS_CHANGED"}
    verdict["success"] = bool(verdict["hosts"]) and all(h["status"] in ok for h in verdict["hosts"])
    print(json.dumps(verdict))
    return 0 if verdict["success"] else 1


if __name__ == "__main__":
    sys.exit(main())
