"""The committed generated code is what the .proto compiles to (run `make protos`)."""

from __future__ import annotations

from vadnet.service.protogen import GENERATED, OUT_DIR, generate


def test_generated_code_matches_proto(tmp_path):
    fresh = generate(tmp_path)
    assert [p.name for p in fresh] == list(GENERATED)
    for path in fresh:
        committed = OUT_DIR / "vadnet" / "v1" / path.name
        assert committed.read_text() == path.read_text(), (
            f"{committed} is stale: run `make protos` and commit the result"
        )


def test_generated_modules_import_as_vadnet_v1():
    from vadnet.v1 import vad_pb2, vad_pb2_grpc

    assert vad_pb2.DESCRIPTOR.package == "vadnet.v1"
    service = vad_pb2.DESCRIPTOR.services_by_name["VoiceActivity"]
    assert {m.name for m in service.methods} == {"StreamingDetect", "Detect", "GetModelInfo"}
    assert hasattr(vad_pb2_grpc, "VoiceActivityStub")
