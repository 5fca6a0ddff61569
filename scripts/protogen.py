"""Regenerate the Python code for protos/ into datamill/v1, or check it is current.

python scripts/protogen.py          # write datamill/v1/*_pb2*.py(i)
python scripts/protogen.py --check  # exit 1 if the committed code is stale
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
THIRD_PARTY = ROOT / "third_party" / "googleapis"
PACKAGE = Path("datamill") / "v1"
INIT = '"""Generated gRPC and protobuf code for datamill.v1 (scripts/protogen.py)."""\n'


def generate(out: Path) -> list[Path]:
    bindir = Path(sys.executable).parent
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / PACKAGE).glob("*.proto"))
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTOS}",
        f"-I{THIRD_PARTY}",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *sources,
    ]
    subprocess.run(cmd, check=True, cwd=PROTOS)
    (out / "datamill" / "__init__.py").write_text('"""datamill: generated contract package."""\n')
    (out / PACKAGE / "__init__.py").write_text(INIT)
    (out / PACKAGE / "py.typed").write_text("")
    return sorted(p.relative_to(out) for p in (out / PACKAGE).iterdir() if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if datamill/v1 is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / PACKAGE).mkdir(parents=True)
        files = generate(out)
        if args.check:
            committed = sorted(
                p.relative_to(ROOT) for p in (ROOT / PACKAGE).iterdir() if p.is_file() and not p.name.endswith(".pyc")
            )
            stale = [
                str(f) for f in files if not (ROOT / f).exists() or not filecmp.cmp(out / f, ROOT / f, shallow=False)
            ]
            stale += [str(f) for f in committed if f not in files]
            if stale:
                print("generated code is stale; run `make proto`:", *stale, sep="\n  ")
                return 1
            print(f"generated code is current ({len(files)} files)")
            return 0
        target = ROOT / PACKAGE
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for f in files:
            shutil.copy2(out / f, ROOT / f)
        shutil.copy2(out / "datamill" / "__init__.py", ROOT / "datamill" / "__init__.py")
        print(f"wrote {len(files)} files into {PACKAGE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
