#!/usr/bin/env python3
"""Discovers brine's API through gRPC server reflection, as a generic client does, and calls
FleetService.ListMinions without the .proto files.

Connects over mutual TLS with an operator or CI certificate, lists the services the master
describes, resolves ListMinions' request and response types from the descriptors it sends, and
prints one JSON object: {"services": [...], "minions": [{"minion_id", ...}, ...]}.
"""
import argparse
import json
import sys

import grpc
from google.protobuf import descriptor_pool, json_format
from google.protobuf.message_factory import GetMessageClass
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

FLEET = "brine.v1.FleetService"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--master", required=True, help="HOST:PORT")
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()

    with open(args.ca, "rb") as ca, open(args.cert, "rb") as cert, open(args.key, "rb") as key:
        credentials = grpc.ssl_channel_credentials(ca.read(), key.read(), cert.read())
    channel = grpc.secure_channel(args.master, credentials)

    try:
        reflection = ProtoReflectionDescriptorDatabase(channel)
        services = sorted(reflection.get_services())
        pool = descriptor_pool.DescriptorPool(reflection)
        method = pool.FindServiceByName(FLEET).FindMethodByName("ListMinions")
        request_class = GetMessageClass(method.input_type)
        response_class = GetMessageClass(method.output_type)
        list_minions = channel.unary_unary(
            f"/{FLEET}/ListMinions",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        answer = list_minions(request_class(), timeout=30)
    except grpc.RpcError as err:
        print(json.dumps({"error": {"code": err.code().name, "message": err.details()}}))
        return 1
    listed = json_format.MessageToDict(answer, preserving_proto_field_name=True)
    print(json.dumps({"services": services, "minions": listed.get("minions", [])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
