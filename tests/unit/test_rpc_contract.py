"""The committed gRPC stubs are exactly what proto/ generates, and the contract has what the gateway needs."""

from __future__ import annotations

from interlink_provider.rpc import codegen
from interlink_provider.rpc.offloader.v1 import offloader_pb2 as pb


def test_committed_stubs_match_proto():
    assert codegen.drifted() == []


def test_the_offloader_service_offers_every_call():
    methods = pb.DESCRIPTOR.services_by_name["Offloader"].methods_by_name
    assert set(methods) >= {"CreatePod", "DeletePod", "GetStatus", "GetLogs", "Ping"}
    assert methods["GetLogs"].server_streaming and not methods["GetStatus"].server_streaming


def test_drift_is_detected(tmp_path, monkeypatch):
    proto = tmp_path / "offloader" / "v1"
    proto.mkdir(parents=True)
    text = (codegen.PROTO_ROOT / "offloader" / "v1" / "offloader.proto").read_text()
    (proto / "offloader.proto").write_text(
        text.replace("message LogChunk {", "message LogChunk {\n  string extra = 9;")
    )
    monkeypatch.setattr(codegen, "PROTO_ROOT", tmp_path)
    assert any("offloader_pb2" in problem for problem in codegen.drifted())
