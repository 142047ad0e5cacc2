# Sourced by bin/*: make sure .venv exists with the package and the given extras installed.
# Usage: ensure_venv EXTRAS   (e.g. "test", or "" for none)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ORY_WSGI_VENV:-$ROOT/.venv}"

pick_python() {
  for candidate in "${PYTHON:-}" python3.12 python3.11 python3 python; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "ory-wsgi needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
  return 1
}

ensure_venv() {
  local extras="$1" spec="." stamp
  [ -n "$extras" ] && spec=".[$extras]"
  if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV" >&2
    "$(pick_python)" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  fi
  # Reinstall only when the package metadata or the extras changed.
  stamp="$VENV/.ory-wsgi-installed-$(echo "$extras" | tr ',' '-')"
  if [ ! -f "$stamp" ] || [ "$ROOT/setup.cfg" -nt "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    echo "installing ory_wsgi$([ -n "$extras" ] && echo "[$extras]") into $VENV" >&2
    (cd "$ROOT" && "$VENV/bin/python" -m pip install -q -e "$spec" >&2)
    touch "$stamp"
  fi
}
