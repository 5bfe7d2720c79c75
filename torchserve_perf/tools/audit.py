#!/usr/bin/env python3
"""`make audit`: pip-audit on requirements.txt, read so that "could not check" never reads as "clean".

What is audited is requirements.txt as resolved in this environment: every installed
distribution pinned to its version (local tags such as ``+cpu`` dropped), given to pip-audit with
``--no-deps --disable-pip``, so nothing is installed or resolved again, only looked up.
pip-audit needs its vulnerability service (PyPI's JSON API or OSV). Offline it fails with a
connection error, or reports dependencies it could not look up; this wrapper says so and exits 2
instead of printing a clean result. Exit codes: 0 clean, 1 vulnerable, 2 not checked / error.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

# What a vulnerability service that cannot be reached looks like in pip-audit's errors.
UNREACHABLE = re.compile(r"ConnectionError|Max retries exceeded|NameResolutionError|Temporary failure in name "
                         r"resolution|Name or service not known|Network is unreachable|timed out|ProxyError|SSLError|"
                         r"Connection refused|HTTPSConnectionPool|ServiceError|Failed to establish a new connection",
                         re.IGNORECASE)
EXIT = {"clean": 0, "vulnerable": 1, "unreachable": 2, "error": 2}


@dataclass
class AuditResult:
    verdict: str  # clean | vulnerable | unreachable | error
    checked: int = 0
    vulnerable: list[str] = field(default_factory=list)  # "name version: ids (fix: versions)"
    skipped: list[str] = field(default_factory=list)  # "name: reason"
    detail: str = ""

    @property
    def exit_code(self) -> int:
        return EXIT[self.verdict]

    def report(self) -> str:
        lines = {
            "clean": f"pip-audit: no known vulnerabilities in {self.checked} checked packages",
            "vulnerable": f"pip-audit: {len(self.vulnerable)} vulnerable packages of {self.checked} checked",
            "unreachable": "pip-audit: NOT CHECKED - the vulnerability database could not be reached "
                           "(offline or blocked); this is not a clean result",
            "error": "pip-audit: NOT CHECKED - pip-audit failed",
        }
        out = [lines[self.verdict]]
        out += [f"  vulnerable: {v}" for v in self.vulnerable]
        out += [f"  not checked: {s}" for s in self.skipped[:5]]
        if len(self.skipped) > 5:
            out.append(f"  not checked: {len(self.skipped) - 5} more")
        if self.detail:
            out.append(f"  {self.detail}")
        return "\n".join(out)


def interpret(completed: subprocess.CompletedProcess) -> AuditResult:
    """Read pip-audit's exit status, JSON report and errors into one verdict."""
    stdout, stderr = completed.stdout or "", completed.stderr or ""
    report = _json(stdout)
    if report is None:
        last = _last_line(stderr) or _last_line(stdout)
        if UNREACHABLE.search(stderr) or UNREACHABLE.search(stdout):
            return AuditResult("unreachable", detail=last)
        return AuditResult("error", detail=f"exit {completed.returncode}: {last}")
    dependencies = report.get("dependencies", []) if isinstance(report, dict) else report
    vulnerable, skipped, checked = [], [], 0
    for dep in dependencies:
        name, version = dep.get("name", "?"), dep.get("version", "?")
        if dep.get("skip_reason"):
            skipped.append(f"{name}: {dep['skip_reason']}")
            continue
        checked += 1
        vulns = dep.get("vulns") or []
        if vulns:
            ids = ", ".join(v.get("id", "?") for v in vulns)
            fixes = sorted({f for v in vulns for f in v.get("fix_versions", [])})
            vulnerable.append(f"{name} {version}: {ids}" + (f" (fix: {', '.join(fixes)})" if fixes else ""))
    if vulnerable:
        return AuditResult("vulnerable", checked, vulnerable, skipped)
    if not checked:  # nothing was looked up: offline, or every package skipped
        return AuditResult("unreachable", 0, [], skipped, "no package could be checked")
    if completed.returncode != 0:
        return AuditResult("error", checked, [], skipped, f"exit {completed.returncode}: {_last_line(stderr)}")
    return AuditResult("clean", checked, [], skipped)


def _json(text: str) -> Optional[dict]:
    start = text.find("{")
    if start < 0:
        return None
    try:
        value = json.loads(text[start:])
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def pinned_environment(skip: tuple[str, ...] = ("torchserve-perf", "torchserve_perf")) -> list[str]:
    """``name==version`` for every distribution installed here: requirements.txt and its dependencies."""
    from importlib import metadata

    pins = {}
    for dist in metadata.distributions():
        names = dist.metadata.get_all("Name") or []
        name = names[0] if names else None
        if not name or name.lower() in skip:
            continue
        pins[name.lower()] = f"{name}=={dist.version.split('+', 1)[0]}"
    return sorted(pins.values())


def pip_audit_command(pinned: Path, extra: list[str]) -> list[str]:
    exe = shutil.which("pip-audit", path=str(Path(sys.executable).parent)) or shutil.which("pip-audit")
    base = [exe] if exe else [sys.executable, "-m", "pip_audit"]
    return [*base, "-r", str(pinned), "--no-deps", "--disable-pip", "--format", "json", "--progress-spinner", "off",
            *extra]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requirements", type=Path, default=Path("requirements.txt"))
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("extra", nargs="*", help="more pip-audit options (after --)")
    args = parser.parse_args(argv)
    if not args.requirements.is_file():
        print(f"pip-audit: NOT CHECKED - {args.requirements} does not exist")
        return 2
    with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="audit-pins-") as pinned:
        pinned.write("\n".join(pinned_environment()) + "\n")
        pinned.flush()
        result = run_audit(pip_audit_command(Path(pinned.name), args.extra), args.timeout)
    print(result.report())
    return result.exit_code


def run_audit(command: list[str], timeout: float) -> AuditResult:
    try:
        # An argument list (no shell): pip-audit, the pinned file we wrote and the caller's own options.
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout)  # noqa: S603
    except FileNotFoundError:
        result = AuditResult("error", detail="pip-audit is not installed (pip install pip-audit)")
    except subprocess.TimeoutExpired:
        result = AuditResult("unreachable", detail=f"no answer within {timeout:.0f} s")
    else:
        result = interpret(completed)
    return result


if __name__ == "__main__":
    sys.exit(main())
