"""The wheel holds only `idledger/` (with the docs' assets and their licences), and
installs beside another distribution that has a top-level `api` package: each
import finds its own."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("idledger", "api", "domain", "projections", "replay")  # what idledger/ links
# A copy of the tree, so that no stale build/ or egg-info of the work tree leaks in.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "var", "*.egg-info", "__pycache__", "*.pyc",
    ".*_cache", ".hypothesis",
)  # fmt: skip
ASSETS = [
    "idledger/api/static/swagger-ui/swagger-ui-bundle.js",
    "idledger/api/static/swagger-ui/swagger-ui.css",
    "idledger/api/static/swagger-ui/favicon-32x32.png",
    "idledger/api/static/swagger-ui/LICENSE",
    "idledger/api/static/swagger-ui/NOTICE",
    "idledger/api/static/redoc/redoc.standalone.js",
    "idledger/api/static/redoc/LICENSE",
]
OTHER_API = """\
[build-system]
requires = ["setuptools>=70.1"]
build-backend = "setuptools.build_meta"

[project]
name = "someone-elses-api"
version = "1.0"

[tool.setuptools]
packages = ["api"]
"""


def build_wheel(source: Path, out: Path) -> Path:
    """`pip wheel --no-deps`, on this environment's setuptools (no download)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(source)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (wheel,) = out.glob(f"{source.name.replace('-', '_')}-*.whl")
    return wheel


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("wheel")


@pytest.fixture(scope="module")
def wheel(scratch: Path) -> Path:
    source = scratch / "idledger"
    shutil.copytree(ROOT, source, symlinks=True, ignore=NOT_SOURCE)
    return build_wheel(source, scratch / "dist")


def test_the_wheel_holds_only_idledger(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"idledger", f"{wheel.name.split('-')[0]}-0.1.0.dist-info"}
    assert not [n for n in names if "/bench/" in f"/{n}" or "/tests/" in f"/{n}"]
    for asset in ASSETS:
        assert asset in names
    # Every file of the packages, .py or not, is shipped (under idledger/).
    for package in PACKAGES:
        base = ROOT / package
        for path in base.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                inside = path.relative_to(base).as_posix()
                shipped = f"idledger/{inside}" if package == "idledger" else (
                    f"idledger/{package}/{inside}"
                )  # fmt: skip
                assert shipped in names, shipped


def test_it_installs_beside_another_top_level_api(wheel: Path, scratch: Path) -> None:
    other = scratch / "someone-elses-api"
    (other / "api").mkdir(parents=True)
    (other / "pyproject.toml").write_text(OTHER_API)
    (other / "api" / "__init__.py").write_text('WHO = "someone else"\n')
    other_wheel = build_wheel(other, scratch / "dist")
    venv = scratch / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-deps", str(wheel), str(other_wheel)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    probe = """
import json, api
from idledger.api.main import create_app
from idledger.settings import Settings
from starlette.testclient import TestClient
import idledger.api.main as main
app = create_app(Settings(store_url="sqlite:///unused.db", index_key="00" * 32, admin_key="k"))
asset = TestClient(app).get("/docs/assets/redoc/redoc.standalone.js")
print(json.dumps([api.WHO, api.__file__, main.__file__, asset.status_code, len(asset.content)]))
"""
    # -P: not the working directory (the work tree has its own `api/`); PYTHONPATH:
    # idledger's dependencies from this environment, which has no idledger of its own
    # on that path (its editable install hooks in through a .pth, not read from there).
    done = subprocess.run(
        [str(python), "-P", "-c", probe],
        cwd=scratch, capture_output=True, text=True, check=False,
        env={"PYTHONPATH": sysconfig.get_paths()["purelib"], "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    who, api_file, main_file, status, size = json.loads(done.stdout.splitlines()[-1])
    site = next((venv / "lib").glob("python3*/site-packages")).resolve()
    assert who == "someone else"
    assert Path(api_file).resolve() == site / "api" / "__init__.py"
    assert Path(main_file).resolve() == site / "idledger" / "api" / "main.py"
    assert status == 200
    assert size == (ROOT / "api/static/redoc/redoc.standalone.js").stat().st_size
