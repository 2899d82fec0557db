#!/usr/bin/env python
"""Execute the analyst notebooks end to end, or strip their outputs for committing.

Each notebook runs in a fresh kernel of this interpreter (the project's ``.venv`` python, whatever Jupyter
kernels are installed on the machine), with the notebook's folder as working directory, as Jupyter does.
The executed copies, outputs included, are written to an output folder; the notebooks themselves are never
modified by a run. The notebooks read their parameters from the environment (``CPBI_ENV``,
``CPBI_NOTEBOOK_STORAGE``, ``CPBI_NOTEBOOK_ROLE``, ... see notebooks/README.md).

    .venv/bin/python scripts/run_notebooks.py                        # every notebooks/*.ipynb
    .venv/bin/python scripts/run_notebooks.py notebooks/cohorts.ipynb --out /tmp/executed
    CPBI_NOTEBOOK_STORAGE=/data/shop .venv/bin/python scripts/run_notebooks.py
    .venv/bin/python scripts/run_notebooks.py --strip                # remove outputs in place before a commit
    .venv/bin/python scripts/run_notebooks.py --check                # exit 1 if a notebook holds outputs

The exit code is 1 when a notebook fails; the message names the notebook and the cell.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
KERNEL_NAME = "python3"
# Notebook and cell metadata that records a session, not content (JupyterLab's timings, widget state).
SESSION_METADATA = ("execution", "collapsed", "scrolled", "ExecuteTime")


def notebooks(folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """The notebooks of ``folder`` (checkpoints excluded), sorted by name."""
    return sorted(p for p in folder.glob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def _interpreter_kernel_manager_class() -> type:
    """A kernel manager whose ``python3`` kernel is this interpreter, whatever kernelspecs are installed.

    A kernelspec found on the Jupyter path (``~/.local/share/jupyter/kernels``, ``/usr/local/share/...``) may
    point at another Python. Here the spec is built by ipykernel for ``sys.executable``, so a fresh venv needs
    no ``ipython kernel install``.
    """
    from ipykernel.kernelspec import RESOURCES, get_kernel_dict
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager, NoSuchKernel
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class InterpreterKernelSpecs(KernelSpecManager):
        def find_kernel_specs(self) -> dict[str, str]:
            return {KERNEL_NAME: RESOURCES}

        def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
            if kernel_name != KERNEL_NAME:
                raise NoSuchKernel(kernel_name)
            return KernelSpec(resource_dir=RESOURCES, **get_kernel_dict())

    class InterpreterKernelManager(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _kernel_spec_manager_default(self) -> KernelSpecManager:
            return InterpreterKernelSpecs()

    return InterpreterKernelManager


@dataclass
class Execution:
    """One notebook run: where its executed copy is, how long it took, and the failure if any."""

    notebook: Path
    output: Path
    seconds: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _describe_failure(nb: Any, cell_index: int | None, exc: BaseException) -> str:
    """'cell 7 (code cell 4: `tables = SecureReader(...`): KeyError: ...' for the cell that failed."""
    lines = str(exc).strip().splitlines()
    message = type(exc).__name__ + (f": {lines[-1]}" if lines else "")
    if cell_index is None or cell_index >= len(nb.cells):
        return message  # the kernel did not start, or died between cells
    cell = nb.cells[cell_index]
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    if errors:
        message = f"{errors[0]['ename']}: {errors[0]['evalue']}"
    code_number = sum(1 for c in nb.cells[: cell_index + 1] if c.cell_type == "code")
    source = (cell.source.strip().splitlines() or [""])[0][:80]
    return f"cell {cell_index + 1} (code cell {code_number}: `{source}`): {message}"


def execute_notebook(path: Path, out_dir: Path, *, env: Mapping[str, str] | None = None,
                     timeout: int = 600) -> Execution:
    """Run ``path`` in a fresh kernel of this interpreter; write the executed copy to ``out_dir``.

    ``env`` replaces the kernel's environment (default: this process's). The committed notebook is read,
    never written.
    """
    import nbformat
    from nbclient import NotebookClient

    path = Path(path).resolve()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / path.name
    if output.resolve() == path:
        raise ValueError(f"the output folder {out_dir} holds the notebook itself: choose another --out")
    nb = nbformat.read(path, as_version=4)
    current: dict[str, int] = {}

    def on_cell_start(cell: Any, cell_index: int) -> None:
        current["index"] = cell_index

    client = NotebookClient(nb, timeout=timeout, kernel_name=KERNEL_NAME,
                            kernel_manager_class=_interpreter_kernel_manager_class(),
                            resources={"metadata": {"path": str(path.parent)}}, on_cell_start=on_cell_start)
    started = time.perf_counter()
    error = None
    # The kernel process's own output (Spark's JVM start-up, kernel warnings) goes to a log next to the copy;
    # what the cells print is in the executed notebook.
    with open(out_dir / f"{path.stem}.kernel.log", "w") as log:
        try:
            client.execute(env=dict(os.environ if env is None else env), stdout=log, stderr=log)
        except Exception as exc:  # CellExecutionError, CellTimeoutError, DeadKernelError, kernel start-up
            error = _describe_failure(nb, current.get("index"), exc)
    if error is None:  # an error raised after the cell's code (e.g. while a figure is drawn) does not stop the run
        failed = [i for i, cell in enumerate(nb.cells)
                  if any(o.get("output_type") == "error" for o in cell.get("outputs", []))]
        if failed:
            error = _describe_failure(nb, failed[0], RuntimeError("error output"))
    seconds = time.perf_counter() - started
    nbformat.write(nb, output)
    return Execution(path, output, seconds, error)


def strip(nb: Any) -> bool:
    """Remove outputs, execution counts and session metadata in place; True when something changed."""
    changed = False
    for cell in nb.cells:
        for key in SESSION_METADATA:
            if key in cell.get("metadata", {}):
                del cell.metadata[key]
                changed = True
        if cell.cell_type != "code":
            continue
        if cell.get("outputs"):
            cell.outputs = []
            changed = True
        if cell.get("execution_count") is not None:
            cell.execution_count = None
            changed = True
    for key in ("widgets", "execution"):
        if key in nb.metadata:
            del nb.metadata[key]
            changed = True
    return changed


def is_stripped(path: Path) -> bool:
    """True when the notebook file has no outputs, execution counts or session metadata."""
    import nbformat

    return not strip(nbformat.read(path, as_version=4))


def strip_files(paths: Sequence[Path]) -> list[Path]:
    """Strip ``paths`` in place (rewritten only when they held outputs); return the rewritten ones."""
    import nbformat

    rewritten = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if strip(nb):
            nbformat.write(nb, path)
            rewritten.append(path)
    return rewritten


def default_out_dir() -> Path:
    """``<CPBI_NOTEBOOK_STORAGE>/outputs/notebooks``, else ``<storage.outputs>/notebooks`` of the configuration the
    notebooks load (``CPBI_ENV``, ``CPBI_NOTEBOOK_OVERRIDES``, relative paths from the repository root)."""
    storage = os.environ.get("CPBI_NOTEBOOK_STORAGE")
    if storage:
        return Path(storage).expanduser().resolve() / "outputs" / "notebooks"
    from cpbi_spark.config import load_config

    overrides = json.loads(os.environ.get("CPBI_NOTEBOOK_OVERRIDES") or "{}")
    cwd = Path.cwd()
    try:
        os.chdir(ROOT)
        config = load_config(env=os.environ.get("CPBI_ENV") or "local", overrides=overrides,
                             conf_dir=os.environ.get("CPBI_CONF_DIR") or ROOT / "conf")
    finally:
        os.chdir(cwd)
    return Path(config.storage.outputs) / "notebooks"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to run (default: notebooks/*.ipynb)")
    parser.add_argument("--out", type=Path, help="folder for the executed copies (default: "
                        "$CPBI_NOTEBOOK_STORAGE/outputs/notebooks, else <storage.outputs>/notebooks)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell (default 600)")
    parser.add_argument("--strip", action="store_true", help="strip outputs from the notebooks in place, run nothing")
    parser.add_argument("--check", action="store_true", help="exit 1 when a notebook holds outputs, run nothing")
    args = parser.parse_args(argv)
    paths = args.notebooks or notebooks()
    if not paths:
        print(f"no notebook in {NOTEBOOK_DIR}", file=sys.stderr)
        return 1
    missing = [p for p in paths if not p.is_file()]
    if missing:
        print("no such notebook: " + ", ".join(map(str, missing)), file=sys.stderr)
        return 1
    if args.strip:
        for path in strip_files(paths):
            print(f"stripped {path}")
        return 0
    if args.check:
        dirty = [p for p in paths if not is_stripped(p)]
        for path in dirty:
            print(f"{path}: holds outputs; run `python scripts/run_notebooks.py --strip`", file=sys.stderr)
        return 1 if dirty else 0
    out_dir = args.out or default_out_dir()
    failed = 0
    for path in paths:
        run = execute_notebook(path, out_dir, timeout=args.timeout)
        if run.ok:
            print(f"ok      {path.name}  {run.seconds:.1f} s  -> {run.output}")
        else:
            failed += 1
            print(f"FAILED  {path.name}  {run.seconds:.1f} s: {run.error}  (executed copy: {run.output}, kernel "
                  f"log: {run.output.with_suffix('.kernel.log')})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
