"""The committed gRPC code is exactly what dsd.proto generates (never hand-edited, never stale)."""

from pathlib import Path

from dsd_runtime.common.proto import generate


def test_generated_code_matches_the_proto(tmp_path: Path):
    generate.generate(tmp_path)
    for name in ("dsd_pb2.py", "dsd_pb2.pyi", "dsd_pb2_grpc.py"):
        committed = (generate.HERE / name).read_text()
        assert (tmp_path / name).read_text() == committed, (
            f"{name} is stale: run `python -m dsd_runtime.common.proto.generate`")
