# shellcheck shell=bash
# The check counter shared by the shell tests: `check NAME COMMAND...` runs COMMAND and
# counts it as passed or failed (naming NAME on stderr); each test ends with its own
# "<name>: $passed passed, $failed failed" line.
passed=0
failed=0
check() {
  local name=$1
  shift
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "FAIL: $name" >&2
  fi
}
