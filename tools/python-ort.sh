#!/usr/bin/env bash
# Python onnxruntime for bench/python_step.py (the model card's own path: a plain Python greedy loop): prints the
# path of a python3 launcher that imports onnxruntime and numpy, e.g.
#   "$(bash tools/python-ort.sh)" bench/python_step.py --model-dir DIR
# Usage: tools/python-ort.sh [--install-missing] [DIR]
#   DIR defaults to ${XDG_CACHE_HOME:-$HOME/.cache}/mega-asr/python-ort. A DIR that exists and is not a copy this
#                      script made is refused, never emptied.
#   --install-missing  as root, apt-get install the Debian archive keyring when it is missing (.ci/run uses it);
#                      without it, what is missing is named and nothing is installed.
# pip cannot reach PyPI here and bookworm has no python3-onnxruntime; Debian trixie has it (1.21), built for its own
# python3.13 and libc 2.41. So trixie's python3-onnxruntime and its whole dependency closure (libc6 included; about
# 53 MB of .deb, 235 MB unpacked) are downloaded with a private apt configuration whose dpkg status is empty, and
# unpacked into DIR/root, never installed: the system's apt sources, lists and packages are left alone (but for
# what --install-missing installs). The launcher DIR/python3 runs trixie's interpreter through trixie's own
# loader, which finds libraries in DIR/root only (not through the system's ld.so.cache). Idempotent: a second run
# only checks and prints the path.
# stdout carries only the path; every message goes to stderr.
set -euo pipefail

readonly PACKAGE=python3-onnxruntime SUITE=trixie
readonly KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

die() {
  printf 'tools/python-ort.sh: %s\n' "$*" >&2
  exit 1
}

install_missing=false
dir=
for arg in "$@"; do
  case "$arg" in
    --install-missing) install_missing=true ;;
    -h | --help)
      sed -n '2,17s/^# \{0,1\}//p' "$0" >&2
      exit 0
      ;;
    -*) die "unknown option $arg (usage: tools/python-ort.sh [--install-missing] [DIR])" ;;
    *)
      [[ -z "$dir" ]] || die "one DIR only (usage: tools/python-ort.sh [--install-missing] [DIR])"
      dir="$arg"
      ;;
  esac
done
dir="${dir:-${XDG_CACHE_HOME:-$HOME/.cache}/mega-asr/python-ort}"
mkdir -p "$(dirname "$dir")"
dir="$(cd "$(dirname "$dir")" && pwd -P)/$(basename "$dir")"
readonly launcher="$dir/python3" marker="$dir/packages"

# Imports onnxruntime and numpy through a launcher, and fails unless every shared object in the process came from its
# own root: a library missing there would otherwise be taken from the system's (a different libc's) folders.
check() {
  local python="$1"
  "$python" -c '
import os, sys
import numpy, onnxruntime
root = os.path.realpath(os.path.join(os.path.dirname(sys.argv[1]), "root")) + "/"
foreign = sorted({l.split()[-1] for l in open("/proc/self/maps") if ".so" in l and not l.split()[-1].startswith(root)})
if foreign:
    sys.exit("libraries from outside " + root + ": " + ", ".join(foreign))
print("onnxruntime", onnxruntime.__version__, "numpy", numpy.__version__, "python", sys.version.split()[0])
' "$python" >&2
}

[[ "$(uname -m)" == x86_64 ]] || die "only for x86_64 (this is $(uname -m)): the launcher names Debian's amd64 loader"

# The cached copy, when whole (a run that was killed never left one: DIR appears by one rename, complete).
if [[ -f "$marker" && -x "$launcher" ]]; then
  check "$launcher" || die "$dir is broken (the check above failed): remove it and run this script again"
  echo "$launcher"
  exit 0
fi

for tool in apt-get dpkg-deb flock; do command -v "$tool" >/dev/null || die "$tool not found: this script needs a Debian or Ubuntu system"; done
if [[ ! -f "$KEYRING" ]]; then
  if $install_missing && ((EUID == 0)); then
    echo "installing debian-archive-keyring (the Debian archive key $KEYRING is missing)" >&2
    apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debian-archive-keyring >&2
  else
    die "the Debian archive key $KEYRING is missing: install debian-archive-keyring, or run this script as root with --install-missing"
  fi
fi

# One download at a time (test files run in parallel processes); a run that waited finds the copy made.
exec 9>"$dir.lock"
flock 9
if [[ -f "$marker" && -x "$launcher" ]]; then
  echo "$launcher"
  exit 0
fi
# DIR appears whole, by one rename, with its packages file: anything else there is not ours to remove.
if [[ -e "$dir" ]]; then
  [[ -f "$marker" ]] || die "$dir exists and is not a python-ort copy made by this script: choose another DIR, or remove it"
  echo "$dir is incomplete (a file was removed?): making it again" >&2
  rm -rf "$dir"
fi
rm -rf "$dir".staging.* # left by a run that was killed

started=$SECONDS
work="$(mktemp -d)"
staging="$(mktemp -d "$dir.staging.XXXXXX")"
trap 'rm -rf "$work" "$staging"' EXIT
# As root, apt downloads as the user _apt: it must be able to enter these folders and write where the .deb go.
chmod 755 "$work"
mkdir -p "$work/sources.list.d" "$work/lists/partial" "$work/archives/partial" "$work/state" "$work/admin"
if ((EUID == 0)) && id _apt >/dev/null 2>&1; then chown -R _apt "$work/archives"; fi
: >"$work/admin/status"
cat >"$work/sources.list.d/$SUITE.sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: $SUITE
Components: main
Signed-By: $KEYRING
EOF
# An empty dpkg status: apt resolves the whole closure from trixie, libc6 included, as for an empty system (its
# locks are taken in $work too). The system's pinning and foreign architectures do not apply.
apt_private=(
  -o "Dir::Etc::sourcelist=/dev/null"
  -o "Dir::Etc::sourceparts=$work/sources.list.d"
  -o "Dir::Etc::preferences=/dev/null"
  -o "Dir::Etc::preferencesparts=/dev/null"
  -o "Dir::State=$work/state"
  -o "Dir::State::Lists=$work/lists"
  -o "Dir::State::status=$work/admin/status"
  -o "Dir::Cache=$work"
  -o "Dir::Cache::archives=$work/archives"
  -o "APT::Architecture=amd64"
  -o "APT::Architectures=amd64"
  -o "APT::Install-Recommends=false"
)
echo "downloading $PACKAGE from $SUITE with its dependencies into $dir (unpacked, not installed)" >&2
apt-get "${apt_private[@]}" -q update >&2 || die "apt-get update of $SUITE failed (network? proxy?)"
apt-get "${apt_private[@]}" -qq -y install --download-only "$PACKAGE" >&2 || die "apt-get could not download $PACKAGE and its dependencies from $SUITE"
debs=("$work"/archives/*.deb)
[[ -f "${debs[0]}" ]] || die "apt-get download left no .deb in $work/archives"
mb=$(du -cm "${debs[@]}" | tail -1 | cut -f1)

mkdir "$staging/root"
for deb in "${debs[@]}"; do
  dpkg-deb -x "$deb" "$staging/root" || die "dpkg-deb could not unpack $(basename "$deb")"
  printf '%s=%s\n' "$(dpkg-deb -f "$deb" Package)" "$(dpkg-deb -f "$deb" Version)"
done | sort >"$staging/packages.tmp"
readonly LIB=root/usr/lib/x86_64-linux-gnu
[[ -x "$staging/$LIB/ld-linux-x86-64.so.2" && -x "$staging/root/usr/bin/python3.13" ]] ||
  die "the unpacked packages have no $LIB/ld-linux-x86-64.so.2 or root/usr/bin/python3.13 (did trixie's python move on?)"
# The launcher finds its root beside itself, so DIR can be renamed into place after the check. blas/ and lapack/ are
# where Debian's alternatives would point libblas.so.3 and liblapack.so.3 (numpy needs them).
cat >"$staging/python3" <<'EOF'
#!/bin/sh
# Debian trixie's python3.13 with onnxruntime and numpy, unpacked by tools/python-ort.sh: run through trixie's own
# loader with trixie's libraries only (--inhibit-cache: not the system's ld.so.cache).
here=$(dirname "$(readlink -f "$0")")
lib="$here/root/usr/lib/x86_64-linux-gnu"
unset PYTHONPATH PYTHONSTARTUP PYTHONUSERBASE
export PYTHONHOME="$here/root/usr" PYTHONNOUSERSITE=1
exec "$lib/ld-linux-x86-64.so.2" --inhibit-cache --library-path "$lib:$lib/blas:$lib/lapack" "$here/root/usr/bin/python3.13" "$@"
EOF
chmod 755 "$staging/python3"
check "$staging/python3" || die "trixie's python cannot import onnxruntime and numpy from $staging (the check above failed)"
mv "$staging/packages.tmp" "$staging/packages"
mv -T "$staging" "$dir"
chmod 755 "$dir"
echo "python-ort: $(wc -l <"$dir/packages") packages, $mb MB downloaded, $(du -sm "$dir" | cut -f1) MB unpacked, $((SECONDS - started)) s" >&2
echo "$launcher"
