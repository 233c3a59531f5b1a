# shellcheck shell=bash
# The check counter shared by the shell tests: `check NAME COMMAND...` runs COMMAND and
# counts it as passed or failed (naming NAME on stderr); each test ends with `summary`,
# "$CHECK_NAME: N passed, M failed" (set CHECK_NAME before sourcing this file).
CHECK_NAME=${CHECK_NAME:-test}
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
summary() { echo "$CHECK_NAME: $passed passed, $failed failed"; }
# stopped_early STATUS: the script ended early (a setup error, a signal): one more failure,
# and the summary line still printed. The lab tests make it their LAB_AT_EXIT.
stopped_early() {
  failed=$((failed + 1))
  echo "FAIL: the test stopped early (status $1)" >&2
  summary
}
