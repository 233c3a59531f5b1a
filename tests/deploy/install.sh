#!/usr/bin/env bash
# What installs vipfarm on an appliance, checked without a farm: the systemd unit and its
# hugepage helper, the sample config, the man pages against the binaries' own lists
# (commands, config keys), the bash completion, the Dockerfile against the Makefile and
# the binaries' shared libraries, and what `meson install` puts where the unit looks.
# Ends with "deploy-install: N passed, M failed"; exits 1 on any failure.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
ctl=${VIPFARMCTL:-build/vipfarmctl}
daemon=${VIPFARMD:-build/vipfarmd}
build=${BUILD:-$(dirname "$ctl")}
py=/usr/bin/python3 # Debian's, whatever python3 is first on PATH
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
CHECK_NAME=deploy-install
# shellcheck source=../lib/check.sh
source tests/lib/check.sh

unit=deploy/systemd/vipfarmd.service
helper=deploy/systemd/vipfarm-hugepages
completion=deploy/bash-completion/vipfarmctl
pages=(docs/man/vipfarmd.8 docs/man/vipfarmctl.8 docs/man/vipfarm.toml.5)

# Prints "OUTPUT" of a command that should have been silent, and fails.
silent() {
  local out
  out=$("$@" 2>&1) || { echo "$out" >&2; return 1; }
  [[ -z $out ]] || { echo "$out" >&2; return 1; }
}

# --- the systemd unit -------------------------------------------------------------------
# The programs the unit runs, from its Exec*= lines (prefixes such as + and - removed).
unit_programs() {
  sed -n 's/^Exec[A-Za-z]*=[-+@!:]*\([^ ]*\).*/\1/p' "$unit" | sort -u
}

# systemd-analyze verify, on the unit as it is: a root directory holds the programs at the
# paths the unit names (vipfarmd and the helper from this tree, anything else from the
# host) and systemd's own units; MANPATH holds the man pages of Documentation=. Any
# warning (an unknown key, a bad value, a missing program or page) fails.
verify_unit() {
  local root=$tmp/root program
  mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd" "$tmp/man/man5" "$tmp/man/man8"
  cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/" || return 1
  cp "$unit" "$root/etc/systemd/system/"
  for program in $(unit_programs); do
    mkdir -p "$root$(dirname "$program")"
    case $(basename "$program") in
      vipfarmd) cp "$daemon" "$root$program" ;;
      vipfarmctl) cp "$ctl" "$root$program" ;;
      vipfarm-hugepages) cp "$helper" "$root$program" ;;
      *) cp "$program" "$root$program" ;;
    esac || return 1
  done
  cp docs/man/*.8 "$tmp/man/man8/" && cp docs/man/*.5 "$tmp/man/man5/" || return 1
  MANPATH=$tmp/man silent systemd-analyze verify --root="$root" \
    /etc/systemd/system/vipfarmd.service
}
check "unit: systemd-analyze verify is clean" verify_unit

# The unit's settings that the rest of vipfarm relies on.
# shellcheck disable=SC2016 # $MAINPID and $VIPFARM_EAL_MEMORY are the unit's, verbatim
unit_settings() {
  local want
  for want in 'Restart=on-failure' 'ExecReload=/bin/kill -HUP $MAINPID' \
    'EnvironmentFile=-/etc/default/vipfarmd' 'RuntimeDirectory=vipfarm' 'Group=vipfarm' \
    'RuntimeDirectoryMode=0750'; do
    grep -qxF "$want" "$unit" || { echo "$unit: no line \"$want\"" >&2; return 1; }
  done
  # The admin socket's default directory is the runtime directory.
  # (grep -q reads from a file: on a pipe it could exit first and fail the pipeline.)
  "$ctl" config-reference >"$tmp/reference.md" || return 1
  if ! grep -qF '| `api.socket` | string | "/run/vipfarm/vipfarmd.sock" |' "$tmp/reference.md"; then
    echo "api.socket's default is no longer in /run/vipfarm" >&2
    return 1
  fi
  # The helper's output feeds ExecStart.
  grep -q "^EnvironmentFile=-/run/vipfarm/eal.env$" "$unit" &&
    grep -q '^ExecStartPre=+.*vipfarm-hugepages /run/vipfarm/eal.env$' "$unit" &&
    grep -q '^ExecStart=.* -- $VIPFARM_EAL_MEMORY ' "$unit"
}
check "unit: restart, reload, options file, socket directory and group" unit_settings

# --- the hugepage helper, on a fake sysfs -----------------------------------------------
# fake_pool TOTAL FREE: a sysfs with one 2 MiB pool, and a hugetlbfs mount.
fake_pool() {
  rm -rf "$tmp/sys"
  mkdir -p "$tmp/sys/kernel/mm/hugepages/hugepages-2048kB"
  echo "$1" >"$tmp/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
  echo "$2" >"$tmp/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages"
  echo "hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0" >"$tmp/mounts"
}
helper_run() {
  env -i PATH="$PATH" VIPFARM_SYSFS="$tmp/sys" VIPFARM_MOUNTS="$tmp/mounts" "$@" \
    "$helper" "$tmp/eal.env" 2>"$tmp/helper.err"
}
helper_enough() {
  fake_pool 512 512
  helper_run VIPFARM_HUGEPAGES=512 && grep -qx 'VIPFARM_EAL_MEMORY="--in-memory"' "$tmp/eal.env"
}
helper_reserves() {
  fake_pool 0 0
  helper_run VIPFARM_HUGEPAGES=300 VIPFARM_MEMORY_MB=128 &&
    grep -qx 300 "$tmp/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
}
helper_keeps_more() {
  fake_pool 2048 2048
  helper_run VIPFARM_HUGEPAGES=512 &&
    grep -qx 2048 "$tmp/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
}
helper_fallback() {
  fake_pool 0 0 # the fake kernel "reserves" none: free stays 0
  helper_run VIPFARM_MEMORY_MB=384 &&
    grep -qx 'VIPFARM_EAL_MEMORY="--no-huge -m 384"' "$tmp/eal.env"
}
helper_never() {
  fake_pool 0 0
  rm -f "$tmp/eal.env"
  ! helper_run VIPFARM_NO_HUGE=never && [[ ! -e $tmp/eal.env ]]
}
helper_too_few() {
  fake_pool 64 64 # 128 MB free, 256 MB wanted
  helper_run VIPFARM_HUGEPAGES=0 && grep -q -- '--no-huge -m 256' "$tmp/eal.env"
}
helper_bad_setting() { fake_pool 512 512 && ! helper_run VIPFARM_HUGEPAGES=lots; }
helper_huge_args() {
  fake_pool 512 512
  helper_run VIPFARM_HUGE_EAL_ARGS= && grep -qx 'VIPFARM_EAL_MEMORY=""' "$tmp/eal.env"
}
check "hugepages: enough free pages, --in-memory" helper_enough
check "hugepages: VIPFARM_HUGE_EAL_ARGS replaces --in-memory" helper_huge_args
check "hugepages: reserves the pages asked for" helper_reserves
check "hugepages: never lowers a larger reservation" helper_keeps_more
check "hugepages: none to be had, --no-huge -m VIPFARM_MEMORY_MB" helper_fallback
check "hugepages: VIPFARM_NO_HUGE=never fails the start" helper_never
check "hugepages: fewer free than VIPFARM_MEMORY_MB counts as none" helper_too_few
check "hugepages: a bad setting fails" helper_bad_setting

# --- the sample config ------------------------------------------------------------------
sample_ok() {
  "$ctl" check-config deploy/vipfarm.toml >"$tmp/check.out" 2>&1 ||
    { cat "$tmp/check.out" >&2; return 1; }
}
check "sample config passes vipfarmctl check-config" sample_ok

# A real appliance: a PCI uplink, 2+ workers, membership with a key under /etc/vipfarm,
# a checker, flow settings; and every key is commented where it first appears.
check "sample config is an appliance's, every key commented" "$py" - deploy/vipfarm.toml <<'PY'
import re, sys, tomllib
path = sys.argv[1]
text = open(path, encoding='utf-8').read()
c = tomllib.loads(text)
problems = []
if not re.fullmatch(r'[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]', c['dataplane']['uplink']):
    problems.append('dataplane.uplink is not a PCI address')
if c['dataplane'].get('workers', 1) < 2:
    problems.append('fewer than 2 workers')
memory = ('--no-huge', '-m', '--socket-mem', '--in-memory', '--legacy-mem')
if any(a.split('=')[0] in memory for a in c['dataplane'].get('eal_args', [])):
    problems.append('eal_args set memory (vipfarm-hugepages does)')
keys = c.get('membership', {}).get('key', [])
if not keys or not all(k['file'].startswith('/etc/vipfarm/') for k in keys):
    problems.append('no membership key file under /etc/vipfarm')
if not c.get('checker'):
    problems.append('no checker')
if 'flows' not in c:
    problems.append('no [flows]')
table, seen, previous = '', set(), ''
for number, line in enumerate(text.splitlines(), 1):
    stripped = line.strip()
    header = re.fullmatch(r'\[\[?([A-Za-z0-9_.]+)\]\]?\s*(#.*)?', stripped)
    if header:
        table = header.group(1)
    elif re.match(r'[A-Za-z0-9_]+\s*=', stripped):
        key = table + '.' + stripped.split('=')[0].strip()
        if key not in seen and '#' not in line and not previous.startswith('#'):
            problems.append('line %d: %s has no comment' % (number, key))
        seen.add(key)
    previous = stripped
for p in problems:
    print(path + ': ' + p, file=sys.stderr)
sys.exit(1 if problems else 0)
PY

# --- man pages --------------------------------------------------------------------------
for page in "${pages[@]}"; do
  check "man: $page renders without warnings" silent groff -man -Tutf8 -ww -z "$page"
done

# The keys of the reference's table (first column), and the key entries of the page's KEYS
# section (.TP followed by .B KEY, and the .SS "[table]" headings of the top-level tables).
# shellcheck disable=SC2016 # backquotes of the Markdown
"$ctl" config-reference | sed -n 's/^| `\([^`]*\)`.*/\1/p' | sort >"$tmp/keys.reference"
"$py" - docs/man/vipfarm.toml.5 >"$tmp/keys.page" <<'PY'
import re, sys
lines = open(sys.argv[1], encoding='ascii').read().splitlines()
start = lines.index('.SH KEYS')
end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith('.SH '))
keys = []
for i, line in enumerate(lines[:end]):
    if i < start:
        continue
    if line == '.TP' and i + 1 < len(lines) and lines[i + 1].startswith('.B '):
        keys.append(lines[i + 1][3:].replace('\\-', '-'))
    m = re.fullmatch(r'\.SS "\[\[?([a-z_]+)\]\]?"', line)
    if m:
        keys.append(m.group(1))
print('\n'.join(sorted(keys)))
PY
same_keys() {
  [[ -s $tmp/keys.reference ]] || return 1
  diff -u --label config-reference "$tmp/keys.reference" --label vipfarm.toml.5 "$tmp/keys.page" >&2
}
check "man: vipfarm.toml.5 names exactly the keys of config-reference" same_keys
check "man: vipfarm.toml.5 is in step with config-reference (docs/man/gen-toml5.py)" \
  "$py" docs/man/gen-toml5.py --vipfarmctl "$ctl" --check

# Commands of `vipfarmctl --help`: the first word of each command line ("stop | start":
# both), and each command's options from its lines ("CMD --opt ...").
"$ctl" --help >"$tmp/help" 2>&1
"$py" - "$tmp/help" >"$tmp/help.options" <<'PY'
import re, sys
options = {}
for line in open(sys.argv[1]):
    m = re.match(r'  ((?:--)?[a-z][a-z-]*)(?: \| ([a-z][a-z-]*))?(.*)$', line.rstrip('\n'))
    if not m:
        continue
    for command in filter(None, m.group(1, 2)):
        options.setdefault(command, set()).update(re.findall(r'--[a-z][a-z-]*', m.group(3)))
for command in sorted(options):
    print(command, *sorted(options[command]))
PY
cut -d' ' -f1 "$tmp/help.options" >"$tmp/commands.help"
check "--help lists commands" test "$(wc -l <"$tmp/commands.help")" -ge 15

# The page's COMMANDS section: one .TP entry per command, \fBNAME\fR first.
"$py" - docs/man/vipfarmctl.8 >"$tmp/commands.page" <<'PY'
import re, sys
lines = open(sys.argv[1], encoding='ascii').read().splitlines()
start = lines.index('.SH COMMANDS')
end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith('.SH '))
names = set()
for i in range(start, end - 1):
    if lines[i] == '.TP':
        m = re.match(r'\\fB(.+?)\\f[RP]', lines[i + 1])
        if m:
            names.add(m.group(1).replace('\\-', '-').split()[0])
# --help, -h and help print the usage: not in the usage's own list.
print('\n'.join(sorted(names - {'--help'})))
PY
same_commands() {
  diff -u --label 'vipfarmctl --help' <(sort -u "$tmp/commands.help") --label "$2" "$1" >&2
}
check "man: vipfarmctl.8 has an entry for every command of --help, and no other" \
  same_commands "$tmp/commands.page" vipfarmctl.8

# Every option of a --help in the page's OPTIONS section (a .TP entry "\fB\-\-name\fR").
# options_documented PAGE HELP-OUTPUT
options_documented() {
  "$py" - "$1" "$2" <<'PY'
import re, sys
lines = open(sys.argv[1], encoding='ascii').read().splitlines()
start = lines.index('.SH OPTIONS')
end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith('.SH '))
entries = set()
for i in range(start, end - 1):
    if lines[i] == '.TP':
        entries.update(o.replace('\\-', '-') for o in
                       re.findall(r'\\fB((?:\\-){1,2}[a-z][a-z\\-]*)\\fR', lines[i + 1]))
wanted = set(re.findall(r'(?<![\w-])--[a-z][a-z-]*', open(sys.argv[2]).read())) - {'--help', '--version'}
missing = sorted(wanted - entries)
for option in missing:
    print('%s: OPTIONS has no entry for %s' % (sys.argv[1], option), file=sys.stderr)
sys.exit(1 if missing or not wanted else 0)
PY
}
check "man: vipfarmctl.8 describes every option of vipfarmctl --help" \
  options_documented docs/man/vipfarmctl.8 "$tmp/help"
"$daemon" --help >"$tmp/daemon.help" 2>&1
check "man: vipfarmd.8 describes every option of vipfarmd --help" \
  options_documented docs/man/vipfarmd.8 "$tmp/daemon.help"

# --- bash completion --------------------------------------------------------------------
# complete WORDS...: COMPREPLY, one per line, for the cursor at the end of the last word.
complete_words() {
  (
    cd "$tmp/files" || exit 1
    # shellcheck source=../../deploy/bash-completion/vipfarmctl
    source "$OLDPWD/$completion" || exit 1
    COMP_WORDS=("$@")
    COMP_CWORD=$(($# - 1))
    COMP_LINE="$*"
    COMP_POINT=${#COMP_LINE}
    COMPREPLY=()
    _vipfarmctl || exit 1
    printf '%s\n' "${COMPREPLY[@]}"
  )
}
mkdir -p "$tmp/files/conf"
touch "$tmp/files/farm.toml" "$tmp/files/notes.txt" "$tmp/files/capture.pcap"
completes_to() { # completes_to EXPECTED WORDS...: COMPREPLY is exactly EXPECTED
  local want=$1 got
  shift
  got=$(complete_words "$@" | paste -sd' ')
  [[ $got == "$want" ]] || { echo "complete '$*': got '$got', want '$want'" >&2; return 1; }
}
completion_commands() {
  complete_words vipfarmctl "" | grep -vx -e help -e --help | sort -u >"$tmp/commands.completion"
  same_commands "$tmp/commands.completion" completion
}
check "completion: every command of --help, and no other" completion_commands
check "completion: vipfarmctl dr<TAB> is drain" completes_to drain vipfarmctl dr
check "completion: vipfarmctl status --so<TAB> is --socket" completes_to --socket vipfarmctl status --so
check "completion: check-config completes config files and directories" \
  completes_to "farm.toml conf" vipfarmctl check-config ""
check "completion: --config completes config files" \
  completes_to "farm.toml" vipfarmctl owner --config f
check "completion: --pcap completes capture files (and directories)" \
  completes_to "capture.pcap conf" vipfarmctl owner --config farm.toml --pcap c
check "completion: owner's protocol" completes_to "tcp" vipfarmctl owner --config farm.toml t
check "completion: an option given is not offered again" \
  completes_to "--socket" vipfarmctl state --json --
every_option() {
  local command options option bad=0
  while read -r command options; do
    [[ $command == --* ]] && continue
    complete_words vipfarmctl "$command" -- >"$tmp/offered"
    for option in $options; do
      grep -qx -- "$option" "$tmp/offered" ||
        { echo "vipfarmctl $command --<TAB> does not offer $option" >&2; bad=1; }
    done
  done <"$tmp/help.options"
  return $bad
}
check "completion: every option --help shows for each command" every_option

# --- Dockerfile -------------------------------------------------------------------------
# Each stage's instructions, continuation lines joined: "STAGE<TAB>INSTRUCTION<TAB>ARGS".
"$py" - Dockerfile >"$tmp/docker" <<'PY'
import re, sys
text = re.sub(r'\\\n', ' ', open(sys.argv[1]).read())
stage = -1
for line in text.splitlines():
    line = line.strip()
    if not line or line.startswith('#'):
        continue
    word, _, rest = line.partition(' ')
    if word.upper() == 'FROM':
        stage += 1
    print('%d\t%s\t%s' % (stage, word.upper(), ' '.join(rest.split())))
PY
# The build stage's RUN commands, split at &&, against `make build`'s recipe.
docker_build_commands() {
  awk -F'\t' '$1 == 0 && $2 == "RUN" { print $3 }' "$tmp/docker" |
    sed 's/ && /\n/g' | sed 's/^ *//; s/ *$//'
}
make_build_commands() {
  env -u BUILD -u MESON_OPTS -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u MAKEOVERRIDES \
    make --no-print-directory -n -B build BUILD=build |
    sed 's/^ *//; s/ *$//'
}
docker_builds_like_ci() {
  local docker_cmds make_cmds
  docker_cmds=$(docker_build_commands) && make_cmds=$(make_build_commands) || return 1
  [[ -n $make_cmds ]] || return 1
  diff -u --label 'make -n build' <(echo "$make_cmds") --label 'Dockerfile build stage' \
    <(echo "$docker_cmds") >&2
}
check "docker: the build stage runs make build's commands (scripts/setup, meson, ninja)" \
  docker_builds_like_ci
docker_stages() {
  grep -qxP '0\tFROM\tdebian:12 AS build' "$tmp/docker" &&
    grep -qxP '1\tFROM\tdebian:12-slim' "$tmp/docker" &&
    grep -qxP '1\tCOPY\t--from=build /src/build/vipfarmd /src/build/vipfarmctl /usr/local/bin/' "$tmp/docker" &&
    grep -qxP '1\tCOPY\t--from=build /src/deploy/vipfarm.toml /etc/vipfarm/vipfarm.toml' "$tmp/docker" &&
    grep -qxP '0\tWORKDIR\t/src' "$tmp/docker"
}
check "docker: debian:12 build stage, slim runtime with the binaries and the sample config" \
  docker_stages

# The runtime stage's packages: the words of its apt-get install that name packages.
awk -F'\t' '$1 == 1 && $2 == "RUN" { print $3 }' "$tmp/docker" | sed 's/ && /\n/g' |
  sed -n 's/.*apt-get install \(.*\)/\1/p' | tr ' ' '\n' | grep -v '^-' | sort -u \
  >"$tmp/runtime.packages"
# The package of a library path: dpkg -S knows /usr/lib/... or /lib/... (usrmerge).
package_of() {
  local path candidates real
  real=$(readlink -f "$1")
  candidates=("$1" "$real" "/usr${1#/usr}" "/usr${real#/usr}" "${1#/usr}" "${real#/usr}")
  for path in "${candidates[@]}"; do
    dpkg -S "$path" 2>/dev/null | sed -n '1s/:.*//p' | grep . && return 0
  done
  echo "no package holds $1" >&2
  return 1
}
runtime_libraries() {
  local lib package bad=0
  ldd "$daemon" "$ctl" >"$tmp/ldd" || return 1
  if grep -q 'not found' "$tmp/ldd"; then
    grep 'not found' "$tmp/ldd" >&2
    return 1
  fi
  # "name => /path (address)", and the loader's "/path (address)"; not "binary:" headers.
  while read -r lib; do
    package=$(package_of "$lib") || { bad=1; continue; }
    grep -qx "$package" "$tmp/runtime.packages" ||
      { echo "the runtime stage lacks $package ($lib)" >&2; bad=1; }
  done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && $2 ~ /^\(/ { print $1 }' \
    "$tmp/ldd" | sort -u)
  return $bad
}
check "docker: the runtime stage installs the package of every library ldd shows" runtime_libraries
# EAL loads its drivers at run time (no ldd line): vipfarmd always needs the mempool
# handler, both buses and the TAP, of the DPDK ABI it links.
runtime_drivers() {
  local abi driver bad=0
  abi=$(ldd "$daemon" | sed -n 's/.*librte_eal\.so\.\([0-9]*\) .*/\1/p')
  [[ -n $abi ]] || return 1
  for driver in mempool-ring bus-pci bus-vdev net-tap; do
    grep -qx "librte-$driver$abi" "$tmp/runtime.packages" ||
      { echo "the runtime stage lacks librte-$driver$abi" >&2; bad=1; }
  done
  # No driver of another ABI (it would not load).
  grep '^librte-' "$tmp/runtime.packages" | grep -vE "^librte-.*(-|[a-z])$abi\$" >&2 && bad=1
  return $bad
}
check "docker: the runtime stage installs EAL's drivers (mempool, buses, TAP) of the same ABI" \
  runtime_drivers
# Every package name exists for Debian 12 (installed here, or known to apt).
runtime_packages_exist() {
  local package bad=0
  [[ -s $tmp/runtime.packages ]] || return 1
  while read -r package; do
    dpkg-query -W "$package" >/dev/null 2>&1 ||
      apt-cache show "$package" >/dev/null 2>&1 ||
      { echo "no Debian package $package" >&2; bad=1; }
  done <"$tmp/runtime.packages"
  return $bad
}
check "docker: every runtime package exists" runtime_packages_exist
check "docker: the build context leaves out build directories" \
  grep -qx -e 'build\*' .dockerignore
check "docker: the build context leaves out .git" grep -qx '.git' .dockerignore

# --- meson install ----------------------------------------------------------------------
# Installs the build into a staging root and looks for the man pages, the completion, the
# unit, and the programs at the paths the unit runs them from.
destdir=$tmp/destdir
meson install -C "$build" --no-rebuild --destdir "$destdir" >"$tmp/install.log" 2>&1 ||
  cat "$tmp/install.log" >&2
"$py" - "$build" >"$tmp/dirs" <<'PY'
import json, subprocess, sys
opts = {o['name']: o['value'] for o in json.loads(subprocess.run(
    ['meson', 'introspect', '--buildoptions', sys.argv[1]],
    check=True, capture_output=True, text=True).stdout)}
def under(d):
    return d if d.startswith('/') else opts['prefix'] + '/' + d
print(opts['prefix'], under(opts['mandir']), under(opts['datadir']))
PY
read -r prefix mandir datadir <"$tmp/dirs"
installed() { [[ -f $destdir$1 ]] || { echo "meson install did not install $1" >&2; return 1; }; }
install_man() {
  installed "$mandir/man8/vipfarmd.8" && installed "$mandir/man8/vipfarmctl.8" &&
    installed "$mandir/man5/vipfarm.toml.5" &&
    cmp -s docs/man/vipfarm.toml.5 "$destdir$mandir/man5/vipfarm.toml.5"
}
check "meson install: the man pages" install_man
check "meson install: the bash completion" \
  installed "$datadir/bash-completion/completions/vipfarmctl"
check "meson install: the systemd unit" installed "$prefix/lib/systemd/system/vipfarmd.service"
install_programs() {
  local program bad=0
  for program in $(unit_programs); do
    case $(basename "$program") in
      vipfarmd | vipfarmctl | vipfarm-hugepages)
        [[ -x $destdir$program ]] ||
          { echo "the unit runs $program; meson install puts no program there" >&2; bad=1; } ;;
    esac
  done
  return $bad
}
check "meson install: the programs where the unit runs them" install_programs

summary
((failed == 0))
