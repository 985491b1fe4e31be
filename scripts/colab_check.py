"""Run chapter notebooks the way Colab does: a fresh environment with only `pip install` of the
package (no dev extras, no repository next to the notebook), profile ci, offline.

    python scripts/colab_check.py [notebooks/09_classification.ipynb ...]

It builds the package's wheel, installs it with its runtime dependencies into a new virtual
environment in a temporary folder (torch first, from TORCH_SPEC, as the Makefile does), copies
each notebook alone into an empty folder and executes it there with that environment's kernel.
A notebook that reaches for a file of the repository (book/, the reference data next to it)
or imports a dev-only package fails here. Exit 1 with the failing cell; the folder is removed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The chapters that read committed reference data (08, 09) and a runtime-only import (11).
DEFAULT_NOTEBOOKS = ["notebooks/09_classification.ipynb", "notebooks/11_ner_and_qa.ipynb"]
KERNEL = "bertcourse-colab-check"
NOT_PACKAGED = (".git", ".venv", "_build", "build", "runs", "student", "*.egg-info", "__pycache__")

EXECUTE = """
import sys, nbformat
from nbclient import NotebookClient
notebook = nbformat.read(sys.argv[1], as_version=4)
client = NotebookClient(notebook, timeout=600, kernel_name=sys.argv[2],
                        resources={"metadata": {"path": sys.argv[3]}})
client.execute()
nbformat.write(notebook, sys.argv[1])
"""

WHERE = "import bertcourse, sys; print(bertcourse.__file__); print(sys.prefix)"


def run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("$", " ".join(str(part) for part in command), flush=True)
    return subprocess.run(command, check=True, **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", default=DEFAULT_NOTEBOOKS)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    options = parser.parse_args(argv)
    torch_spec = os.environ.get("TORCH_SPEC", "torch==2.13.0")
    folder = Path(tempfile.mkdtemp(prefix="bertcourse_colab_"))
    started = time.perf_counter()
    try:
        source = folder / "source"  # a copy, so that the build leaves nothing in the checkout
        shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_PACKAGED))
        run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
             "--wheel-dir", str(folder / "wheel"), str(source)])  # fmt: skip
        wheel = next((folder / "wheel").glob("bertcourse-*.whl"))
        run([sys.executable, "-m", "venv", str(folder / "venv")])
        python = folder / "venv" / "bin" / "python"
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        run([*pip, *torch_spec.split()])
        # What Colab has besides the package: a Jupyter kernel.
        run([*pip, str(wheel), "nbclient", "ipykernel"])
        run([str(python), "-m", "ipykernel", "install", "--sys-prefix", "--name", KERNEL])
        environment = {
            key: value
            for key, value in os.environ.items()
            if key not in ("PYTHONPATH", "VIRTUAL_ENV")
        }
        environment.pop("MPLBACKEND", None)  # the kernel's inline backend, as on Colab
        environment.update(BERTCOURSE_PROFILE="ci", HF_HUB_OFFLINE="1")
        work = folder / "work"
        work.mkdir()
        where = run([str(python), "-c", WHERE], cwd=work, env=environment,
                    capture_output=True, text=True).stdout.split()  # fmt: skip
        if not where[0].startswith(str(folder / "venv")):
            print(f"colab check: bertcourse imported from {where[0]}, not the new environment")
            return 1
        failures = []
        for name in options.notebooks:
            source = ROOT / name
            target = work / source.stem / source.name  # alone in an empty folder
            target.parent.mkdir()
            shutil.copy(source, target)
            began = time.perf_counter()
            result = subprocess.run(
                [str(python), "-c", EXECUTE, str(target), KERNEL, str(target.parent)],
                cwd=target.parent, env=environment, capture_output=True, text=True,
            )  # fmt: skip
            seconds = time.perf_counter() - began
            if result.returncode:
                failures.append(source.name)
                print(f"colab check: {source.name} FAILED after {seconds:.0f} s:")
                print(result.stderr[-4000:])
            else:
                print(f"colab check: {source.name} ran in a fresh environment in {seconds:.0f} s")
        total = time.perf_counter() - started
        if failures:
            print(f"colab check: {len(failures)} notebook(s) failed: {', '.join(failures)}")
            return 1
        print(f"colab check: all {len(options.notebooks)} notebook(s) passed ({total:.0f} s)")
        return 0
    finally:
        if options.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
