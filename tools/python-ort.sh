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
# loader, which finds libraries in DIR/root only (not through the system's ld.so.cache), as itself: sys.executable
# is the launcher, so a child Python started with it (subprocess, multiprocessing) runs the same way. Idempotent: a
# second run only checks and prints the path (and brings a launcher written by an older version up to date).
# stdout carries only the path; every message goes to stderr.
set -euo pipefail

readonly SCRIPT=tools/python-ort.sh NAME=python-ort PACKAGE=python3-onnxruntime SUITE=trixie
# shellcheck source=tools/private-apt.sh
. "$(dirname "${BASH_SOURCE[0]}")/private-apt.sh"

parse_args "$@"
readonly launcher="$dir/python3"
whole() { [[ -f "$dir/packages" && -x "$launcher" ]]; }

# The launcher finds its root beside itself, so DIR can be renamed into place after the check. blas/ and lapack/ are
# where Debian's alternatives would point libblas.so.3 and liblapack.so.3 (numpy needs them). --argv0: Python takes
# sys.executable from argv[0], which the loader would set to python3.13, a program that cannot start without it.
launcher_script() {
  cat <<'EOF'
#!/bin/sh
# Debian trixie's python3.13 with onnxruntime and numpy, unpacked by tools/python-ort.sh: run through trixie's own
# loader with trixie's libraries only (--inhibit-cache: not the system's ld.so.cache), as this launcher (--argv0).
here=$(dirname "$(readlink -f "$0")")
lib="$here/root/usr/lib/x86_64-linux-gnu"
unset PYTHONPATH PYTHONSTARTUP PYTHONUSERBASE
export PYTHONHOME="$here/root/usr" PYTHONNOUSERSITE=1
exec "$lib/ld-linux-x86-64.so.2" --inhibit-cache --library-path "$lib:$lib/blas:$lib/lapack" --argv0 "$here/python3" "$here/root/usr/bin/python3.13" "$@"
EOF
}

# Imports onnxruntime and numpy through a launcher, and fails unless every shared object in the process came from its
# own root (a library missing there would otherwise be taken from the system's, a different libc's, folders) and
# sys.executable is the launcher.
check() {
  local python="$1"
  "$python" -c '
import os, sys
import numpy, onnxruntime
root = os.path.realpath(os.path.join(os.path.dirname(sys.argv[1]), "root")) + "/"
foreign = sorted({l.split()[-1] for l in open("/proc/self/maps") if ".so" in l and not l.split()[-1].startswith(root)})
if foreign:
    sys.exit("libraries from outside " + root + ": " + ", ".join(foreign))
if os.path.realpath(sys.executable) != os.path.realpath(sys.argv[1]):
    sys.exit("sys.executable is " + sys.executable + ", not the launcher " + sys.argv[1])
print("onnxruntime", onnxruntime.__version__, "numpy", numpy.__version__, "python", sys.version.split()[0])
' "$python" >&2
}

[[ "$(uname -m)" == x86_64 ]] || die "only for x86_64 (this is $(uname -m)): the launcher names Debian's amd64 loader"

# The cached copy, when whole (a run that was killed never left one: DIR appears by one rename, complete). A launcher
# an older version wrote is replaced, by one rename: the packages are the same.
if whole; then
  if [[ "$(launcher_script)" != "$(cat "$launcher")" ]]; then
    fresh="$(mktemp "$launcher.XXXXXX")"
    launcher_script >"$fresh"
    chmod 755 "$fresh"
    mv -f "$fresh" "$launcher"
  fi
  check "$launcher" || die "$dir is broken (the check above failed): remove it and run this script again"
  echo "$launcher"
  exit 0
fi

need_apt
begin_copy packages "$launcher"
started=$SECONDS
echo "downloading $PACKAGE from $SUITE with its dependencies into $dir (unpacked, not installed)" >&2
private_apt "$SUITE"
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
launcher_script >"$staging/python3"
chmod 755 "$staging/python3"
check "$staging/python3" || die "trixie's python cannot import onnxruntime and numpy from $staging (the check above failed)"
mv "$staging/packages.tmp" "$staging/packages"
publish_copy
echo "python-ort: $(wc -l <"$dir/packages") packages, $mb MB downloaded, $(du -sm "$dir" | cut -f1) MB unpacked, $((SECONDS - started)) s" >&2
echo "$launcher"
