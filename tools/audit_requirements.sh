#!/usr/bin/env bash
# Audit the pack's dependencies against PyPI's vulnerability data (pip-audit, service "pypi").
#
# What is audited: every package named in requirements.txt plus torch and torchvision (ComfyUI provides them), at
# the versions installed in the Python environment that runs the pack ($PYTHON, default "python"), so the report
# is about what actually runs. pip-audit itself goes into a throw-away virtual environment, never into that one.
# Exit status: 0 = no known vulnerability in what could be audited (packages PyPI has no data for are listed as
# "not audited"; when nothing could be audited, or pip-audit/PyPI are unreachable, a line starting with "SKIP:"
# says why), 1 = vulnerabilities found (listed with their IDs and fixed versions).
# Extra arguments go to pip-audit, e.g. --ignore-vuln GHSA-xxxx for a reviewed, accepted finding.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$python" - "$root/requirements.txt" >"$work/pinned.txt" <<'PY'
import re
import sys
from importlib.metadata import PackageNotFoundError, version

names = ["torch", "torchvision"]
for line in open(sys.argv[1], encoding="utf-8"):
    requirement = line.split("#", 1)[0].strip()
    if requirement:
        names.append(re.split(r"[<>=!~\[;\s]", requirement, maxsplit=1)[0])
for name in dict.fromkeys(names):
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        print(f"note: {name} is not installed; not audited", file=sys.stderr)
PY
echo "auditing (installed versions):" $(cat "$work/pinned.txt")

if ! "$python" -m venv "$work/venv" >/dev/null 2>&1 || ! "$work/venv/bin/pip" install -q pip-audit >/dev/null 2>&1; then
  echo "SKIP: pip-audit could not be installed (no access to the package index)"
  exit 0
fi
if ! "$work/venv/bin/python" -c "import urllib.request; urllib.request.urlopen('https://pypi.org/pypi/pip/json', timeout=30)" 2>/dev/null; then
  echo "SKIP: PyPI's vulnerability data (pypi.org JSON API) is unreachable from here"
  exit 0
fi
status=0
"$work/venv/bin/pip-audit" -r "$work/pinned.txt" --no-deps --disable-pip --vulnerability-service pypi \
  --progress-spinner off --desc --format json --output "$work/audit.json" "$@" 2>/dev/null || status=$?
"$python" - "$work/audit.json" "$status" <<'PY'
import json
import sys

report, status = json.load(open(sys.argv[1], encoding="utf-8")), int(sys.argv[2])
audited = [d for d in report["dependencies"] if "skip_reason" not in d]
skipped = [d for d in report["dependencies"] if "skip_reason" in d]
for dep in skipped:
    print(f"not audited: {dep['name']} {dep.get('version', '')}: {dep['skip_reason']}")
found = 0
for dep in audited:
    for vuln in dep["vulns"]:
        found += 1
        fixed = ", ".join(vuln.get("fix_versions") or []) or "no fix yet"
        print(f"VULNERABLE: {dep['name']} {dep['version']}: {vuln['id']} (fixed in {fixed}) {vuln.get('description', '')[:200]}")
if not audited:
    print("SKIP: PyPI's vulnerability data knows none of the installed versions; nothing could be audited")
    sys.exit(0)
print(f"audited {len(audited)} package(s): {found} known vulnerabilit{'y' if found == 1 else 'ies'}")
sys.exit(1 if found or status not in (0, 1) else 0)
PY
