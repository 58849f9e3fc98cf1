"""Builds nat-client: generates the gRPC stubs from the repository's proto/ before packaging.

pip builds a local directory in place, so ``../../proto`` is the repository's ``proto/``. The stubs
(``nat_pb2.py``, ``nat_pb2.pyi``, ``nat_pb2_grpc.py``) go to ``nat_client/_proto/nat/v1/`` and
are never committed; ``nat_client/_proto/__init__.py`` records the sha256 of the proto they were
made from (``PROTO_SHA256``), which the tests compare with the repository's file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"
PROTO_FILE = "nat/v1/nat.proto"
OUT = HERE / "nat_client" / "_proto"
# protoc's gRPC plugin imports the messages by their proto path; inside this package they live
# under nat_client._proto.
GRPC_IMPORT = "from nat.v1 import nat_pb2 as"
PACKAGE_IMPORT = "from nat_client._proto.nat.v1 import nat_pb2 as"


def generate() -> None:
    """Runs grpc_tools.protoc on ../../proto/nat/v1/nat.proto into nat_client/_proto/."""
    source = PROTO_ROOT / PROTO_FILE
    if not source.is_file():
        raise SystemExit(
            f"nat-client: {source} is missing. Build the client from the repository "
            "(pip install ./clients/python): the stubs are generated from proto/ at build time."
        )
    from grpc_tools import protoc  # a build requirement (pyproject.toml)

    import grpc_tools

    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    target = OUT / "nat" / "v1"
    target.mkdir(parents=True, exist_ok=True)
    for stale in target.glob("nat_pb2*"):
        stale.unlink()
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={OUT}",
        f"--pyi_out={OUT}",
        f"--grpc_python_out={OUT}",
        str(source),
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"nat-client: protoc failed on {source}")

    grpc_module = target / "nat_pb2_grpc.py"
    text = grpc_module.read_text(encoding="utf-8")
    if text.count(GRPC_IMPORT) != 1:
        raise SystemExit(f"nat-client: unexpected import layout in generated {grpc_module}")
    grpc_module.write_text(text.replace(GRPC_IMPORT, PACKAGE_IMPORT), encoding="utf-8")

    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    (OUT / "__init__.py").write_text(
        '"""Stubs generated from the repository\'s proto/ at build time (see setup.py)."""\n\n'
        f'PROTO_FILE = "{PROTO_FILE}"\n'
        f"# sha256 of {PROTO_FILE} when these stubs were generated.\n"
        f'PROTO_SHA256 = "{digest}"\n',
        encoding="utf-8",
    )
    for package in (OUT / "nat", target):
        (package / "__init__.py").write_text("", encoding="utf-8")


# Every setup.py command (egg_info, build_py, editable installs) needs the stubs in place; the
# build requirements, grpcio-tools included, are installed before any command runs.
generate()
setup()
