"""Generates dsd_pb2*.py from dsd.proto with grpcio-tools; a test checks the committed files are current."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent


def generate(out_dir: Path = HERE) -> None:
    from grpc_tools import protoc

    args = ["protoc", f"-I{HERE}", f"--python_out={out_dir}", f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}", str(HERE / "dsd.proto")]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed")
    # protoc emits `import dsd_pb2`; make it package-relative.
    grpc_file = out_dir / "dsd_pb2_grpc.py"
    grpc_file.write_text(grpc_file.read_text().replace("import dsd_pb2 as", "from . import dsd_pb2 as"))


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
