"""What an installed wheel holds (the recipes as package data) and what the console scripts print (no import noise)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import subprocess_env

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_CONFIGS = ROOT / "fairseq_kt" / "configs"
BUILD_FILES = ("setup.py", "pyproject.toml", "README.md", "MANIFEST.in")

needs_package_configs = pytest.mark.skipif(
    not PACKAGE_CONFIGS.is_dir(),
    reason="fairseq_kt/configs does not exist yet (the recipes still live only in the top-level configs/)",
)


def _shipped_recipes() -> set[str]:
    """The YAML files under fairseq_kt/configs, as wheel member names."""
    return {f"fairseq_kt/configs/{p.relative_to(PACKAGE_CONFIGS).as_posix()}" for p in PACKAGE_CONFIGS.rglob("*.yaml")}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the checkout (no build folder or egg-info lands in the shared tree)."""
    src = tmp_path_factory.mktemp("src")
    shutil.copytree(ROOT / "fairseq_kt", src / "fairseq_kt", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in BUILD_FILES:
        shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (path,) = out.glob("fairseq_kt-*.whl")
    return path


@needs_package_configs
def test_checkout_configs_link_to_the_package() -> None:
    # documented commands use --config-dir configs/finetune from the checkout's root
    assert (ROOT / "configs").resolve() == PACKAGE_CONFIGS.resolve()
    assert (ROOT / "configs" / "finetune" / "demo_rl_cif.yaml").is_file()


@needs_package_configs
def test_wheel_ships_every_recipe(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    recipes = _shipped_recipes()
    assert "fairseq_kt/configs/finetune/demo_rl_cif.yaml" in recipes
    assert recipes <= names, sorted(recipes - names)


@needs_package_configs
def test_demo_finds_its_configs_in_an_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    env = subprocess_env()
    env["PYTHONPATH"] = str(site)  # the unpacked wheel, not the checkout
    code = "import fairseq_kt, fairseq_kt.cli.demo as d; print(fairseq_kt.__file__); print(d.config_dir())"
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    package_file, config_dir = (Path(line) for line in proc.stdout.strip().splitlines()[-2:])
    package = (site / "fairseq_kt").resolve()
    assert package_file.resolve().parent == package
    assert config_dir.resolve().is_relative_to(package) and (config_dir / "demo_rl_cif.yaml").is_file()


def _load_args_module():
    """``fairseq_kt/cli/_args.py`` loaded by path, without importing the package (which imports fairseq)."""
    spec = importlib.util.spec_from_file_location("fairseq_kt_cli_args", ROOT / "fairseq_kt" / "cli" / "_args.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


QUIET_IMPORT = """
import importlib.util, logging, sys
spec = importlib.util.spec_from_file_location("args", sys.argv[1])
args = importlib.util.module_from_spec(spec)
spec.loader.exec_module(args)
if sys.argv[2] == "quiet":
    with args.quiet_fairseq_import():
        import fairseq.tasks, fairseq.models
else:
    import fairseq.tasks, fairseq.models
root = logging.getLogger()
print("level", root.level, "handlers", len(root.handlers))
"""


@pytest.mark.parametrize("mode", ["quiet", "plain"])
def test_quiet_fairseq_import(mode: str) -> None:
    cmd = [sys.executable, "-c", QUIET_IMPORT, str(ROOT / "fairseq_kt" / "cli" / "_args.py"), mode]
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    noisy = "tensorboardX" in proc.stdout + proc.stderr
    if mode == "plain":  # what fairseq does on its own: the test above would notice the noise
        assert noisy and "handlers 0" not in proc.stdout
    else:
        assert not noisy, proc.stderr
        assert f"level {30} handlers 0" in proc.stdout  # root logger as Python leaves it: WARNING, no handler


def test_quiet_fairseq_import_restores_logging() -> None:
    import logging

    args = _load_args_module()
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    with args.quiet_fairseq_import():
        logging.basicConfig(level=logging.DEBUG)  # what fairseq's modules do on import
        assert logging.getLogger("x").isEnabledFor(logging.INFO) is False
    assert root.level == level and root.handlers == handlers
    assert logging.getLogger("x").isEnabledFor(logging.WARNING)


def _console_script(name: str) -> list[str]:
    script = Path(sys.executable).parent / name
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "fairseq_kt.cli." + name.rsplit("-", 1)[1]]


@pytest.mark.parametrize("name", ["fairseq-kt-evaluate", "fairseq-kt-bench"])
def test_console_scripts_print_no_import_noise(name: str) -> None:
    proc = subprocess.run(
        [*_console_script(name), "--help"], env=subprocess_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("usage: " + name), proc.stdout[:500]
    lines = (proc.stdout + proc.stderr).splitlines()
    assert not [line for line in lines if "tensorboardX" in line or line.startswith(("INFO:", "DEBUG:"))], lines[:5]


SCRIPTS = ROOT / "scripts"


@pytest.mark.parametrize("name", ["gpu_check.sh", "gpu_wheels.sh"])
def test_gpu_scripts_parse(name: str) -> None:
    proc = subprocess.run(["bash", "-n", str(SCRIPTS / name)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_gpu_check_is_consistent_with_the_project() -> None:
    import tomllib

    script = (SCRIPTS / "gpu_check.sh").read_text()
    wheels = (SCRIPTS / "gpu_wheels.sh").read_text()
    markers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith("gpu:") for m in markers)  # pytest -m gpu selects a registered marker
    assert "pytest -q -rs -m gpu tests/test_gpu.py" in script and (ROOT / "tests" / "test_gpu.py").is_file()
    assert "pip install --quiet --no-index --no-deps" in script
    assert "fairseq_kt.cli.bench --device cuda" in script
    # the wheel folder brings the fairseq that setup.py's extra pins
    pin = re.search(r'"fairseq": \["(ve-fairseq==[\d.]+)"\]', (ROOT / "setup.py").read_text()).group(1)
    assert f'"{pin}"' in wheels and "--python-version 3.12" in wheels


def test_gpu_tests_are_collected_and_marked() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--collect-only", "-m", "gpu", "tests/test_gpu.py"],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert re.search(r"(\d+) tests? collected", proc.stdout) and "test_hydra_train_in_mixed_precision" in proc.stdout
