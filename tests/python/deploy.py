#!/usr/bin/env python3
"""Calls brine's FleetService.Deploy over mutual TLS, as a CI job written in Python would.

Generates the gRPC stubs from proto/brine/v1/*.proto with grpcio-tools, calls Deploy with a
`ci` certificate, follows the streamed events and prints one JSON verdict:
{"job_id": ..., "attached": ..., "success": ..., "hosts": [{"minion_id", "status", "error"}]}.

With --request-id the call is safe to retry: a repeat attaches to the job the first call started
(running or finished) instead of starting another. --drop-after-start hangs up after the job has
started, as a lost connection would.

Exit codes, as brine-master's: 0 every host is fine, 1 some host is not, 2 refused (fix the
input), 3 refused for now (retry later: the fleet is locked, the master unreachable, ...),
4 outcome unknown (the stream ended before the summary: retry with the same request id).
"""
import argparse
import json
import pathlib
import sys
import tempfile

import grpc
from grpc_status import rpc_status
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto" / "proto"
RETRY_LATER = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}


def stubs(out: pathlib.Path):
    files = sorted(str(p) for p in (PROTO_DIR / "brine" / "v1").glob("*.proto"))
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    status = protoc.main(
        ["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}"]
        + files
    )
    if status != 0:
        sys.exit(f"protoc failed with status {status}")
    sys.path.insert(0, str(out))
    from brine.v1 import fleet_pb2, fleet_pb2_grpc, host_pb2  # noqa: E402 (generated just now)
    return fleet_pb2, fleet_pb2_grpc, host_pb2


def refusal(err: grpc.RpcError) -> dict:
    """What the master said, with the ErrorInfo reason a program branches on."""
    from google.rpc import error_details_pb2

    refused = {"code": err.code().name, "message": err.details(), "reason": None, "metadata": {}}
    status = rpc_status.from_call(err)
    for detail in status.details if status else []:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.domain == "brine.v1":
            refused["reason"] = info.reason
            refused["metadata"] = dict(info.metadata)
    return refused


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--master", required=True, help="HOST:PORT")
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--role", action="append", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--request-id", default="", help="makes the call safe to retry")
    parser.add_argument("--drop-after-start", action="store_true",
                        help="hang up once the job has started, as a lost connection would")
    parser.add_argument("--server-name", default="localhost",
                        help="the name the master's certificate is checked against")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as generated:
        pb, pb_grpc, host_pb = stubs(pathlib.Path(generated))
        credentials = grpc.ssl_channel_credentials(
            root_certificates=pathlib.Path(args.ca).read_bytes(),
            private_key=pathlib.Path(args.key).read_bytes(),
            certificate_chain=pathlib.Path(args.cert).read_bytes(),
        )
        options = [("grpc.ssl_target_name_override", args.server_name)]
        with grpc.secure_channel(args.master, credentials, options=options) as channel:
            fleet = pb_grpc.FleetServiceStub(channel)
            job_options = pb.JobOptions(request_id=args.request_id)
            job_options.batch_timeout.FromSeconds(120)
            request = pb.DeployRequest(roles=args.role, image=args.image, options=job_options)
            verdict = {"job_id": None, "attached": False, "success": False, "hosts": []}
            # A host's later report (after an auto-revert) replaces its earlier one.
            hosts = {}
            summarized = False
            try:
                events = fleet.Deploy(request, timeout=300)
                for response in events:
                    kind = response.event.WhichOneof("kind")
                    if kind == "started":
                        verdict["job_id"] = response.event.started.job_id
                        verdict["attached"] = response.event.started.attached
                        if args.drop_after_start:
                            events.cancel()
                            break
                    elif kind == "host_finished":
                        report = response.event.host_finished
                        hosts[report.minion_id] = {
                            "minion_id": report.minion_id,
                            "status": host_pb.HostStatus.Name(report.status),
                            "error": report.error or None,
                        }
                    elif kind == "summary":
                        summarized = True
            except grpc.RpcError as err:
                if verdict["job_id"] is None:
                    refused = refusal(err)
                    print(json.dumps({"error": refused}))
                    return 3 if err.code() in RETRY_LATER else 2
    verdict["hosts"] = [hosts[minion_id] for minion_id in sorted(hosts)]
    if not summarized:
        verdict["outcome"] = "unknown"
        print(json.dumps(verdict))
        return 4
    ok = {"HOST_STATUS_UNCHANGED", "HOST_STATUS_CHANGED"}
    verdict["success"] = bool(verdict["hosts"]) and all(h["status"] in ok for h in verdict["hosts"])
    print(json.dumps(verdict))
    return 0 if verdict["success"] else 1


if __name__ == "__main__":
    sys.exit(main())
