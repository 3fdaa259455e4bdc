#!/usr/bin/env bash
# Mesa's software Vulkan driver (lavapipe) for running the webgpu backend on a CPU: prints the path of a Vulkan
# ICD json that selects it, for VK_ICD_FILENAMES, e.g.
#   VK_ICD_FILENAMES=$(bash tools/lavapipe.sh) ASR_BACKEND=webgpu npm start
# Usage: tools/lavapipe.sh [--install-missing] [DIR]
#   DIR defaults to ${XDG_CACHE_HOME:-$HOME/.cache}/mega-asr/lavapipe. A DIR that exists and is not a copy this
#                      script made is refused, never emptied.
#   --install-missing  as root, apt-get install the Vulkan loader (libvulkan1) and any library lavapipe needs
#                      that is not installed (.ci/run uses it); without it, what is missing is named and nothing
#                      is installed.
# Bookworm's Mesa 22.3.6 is refused by Dawn (onnxruntime's WebGPU); the 25.0.7 build from bookworm-backports works.
# The archive keeps only the newest build of a backport: once 25.0.7 is gone, the newest Mesa 25 or later there is
# taken instead (and said on stderr), so a fresh machine still gets a driver.
# It is downloaded with a private apt configuration and unpacked into DIR, never installed: the system's apt
# sources, lists and packages are left alone (but for what --install-missing installs). Idempotent: a second run
# only checks and prints the path.
# stdout carries only the path; every message goes to stderr.
set -euo pipefail

readonly SCRIPT=tools/lavapipe.sh NAME=lavapipe PACKAGE=mesa-vulkan-drivers VERSION=25.0.7-2~bpo12+1 MIN_MAJOR=25
readonly LIB_IN_PACKAGE=usr/lib/x86_64-linux-gnu/libvulkan_lvp.so
PATH="$PATH:/usr/sbin:/sbin" # ldconfig lives there; appended, so a PATH entry the caller chose comes first
# shellcheck source=tools/private-apt.sh
. "$(dirname "${BASH_SOURCE[0]}")/private-apt.sh"

parse_args "$@"
readonly json="$dir/lvp_icd.json" lib="$dir/$LIB_IN_PACKAGE"
[[ "$dir" != *[\"\\]* ]] || die "DIR must not contain \" or \\ (the ICD json names the driver by its path): $dir"
whole() { [[ -f "$json" && -f "$lib" && -f "$dir/depends" ]]; }

installed() { [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" == installed ]]; }

check_loader() {
  # grep reads all (no -q): with pipefail, ldconfig cut off by an early exit would count as a failure
  ldconfig -p | grep '^[[:space:]]*libvulkan\.so\.1 ' >/dev/null || provide "the Vulkan loader libvulkan.so.1 is missing" libvulkan1
}

# Every shared library the driver links against must resolve; what is missing is named by the packages that carry
# it: those of the driver's Depends (kept in DIR/depends) that are not installed.
check_libraries() {
  local library="$1" depends="$2" missing
  missing="$(ldd "$library" 2>&1 | grep 'not found' || true)"
  [[ -z "$missing" ]] && return
  local packages=() p
  for p in $(tr ',' '\n' <"$depends" | sed 's/[(|].*//'); do
    installed "$p" || packages+=("$p")
  done
  ((${#packages[@]})) || die "lavapipe cannot load, though every package it depends on is installed: $missing"
  provide "lavapipe needs libraries that are not installed ($(awk '{print $1}' <<<"$missing" | paste -sd ' '))" "${packages[@]}"
  missing="$(ldd "$library" 2>&1 | grep 'not found' || true)"
  [[ -z "$missing" ]] || die "lavapipe still cannot load: $missing"
}

[[ "$(uname -m)" == x86_64 ]] || die "only for x86_64 (this is $(uname -m)): the Mesa build used here is Debian's amd64 one"
command -v ldconfig >/dev/null || die "ldconfig not found: this script needs a Debian or Ubuntu system (libc-bin)"
check_loader

# The cached copy, when whole (a run that was killed never left one: DIR appears by one rename, complete).
if whole; then
  check_libraries "$lib" "$dir/depends"
  echo "$json"
  exit 0
fi

need_apt
begin_copy depends "$json"
echo "downloading $PACKAGE $VERSION from bookworm-backports into $dir (unpacked, not installed)" >&2
private_apt bookworm-backports
# apt-get download writes the .deb where it runs
if ! (cd "$work/archives" && apt-get "${apt_private[@]}" -q download "$PACKAGE=$VERSION" >&2); then
  echo "$PACKAGE $VERSION is no longer in bookworm-backports: taking the newest build there" >&2
  (cd "$work/archives" && apt-get "${apt_private[@]}" -q download "$PACKAGE" >&2) || die "apt-get download $PACKAGE from bookworm-backports failed"
fi
deb="$(echo "$work/archives/${PACKAGE}"_*.deb)"
[[ -f "$deb" ]] || die "apt-get download left no $PACKAGE .deb"
got="$(dpkg-deb -f "$deb" Version)"
major="${got#*:}"
major="${major%%.*}"
[[ "$major" =~ ^[0-9]+$ ]] && ((major >= MIN_MAJOR)) || die "bookworm-backports has $PACKAGE $got; Dawn needs Mesa $MIN_MAJOR or newer"

dpkg-deb -x "$deb" "$staging"
[[ -f "$staging/$LIB_IN_PACKAGE" ]] || die "$PACKAGE $got has no $LIB_IN_PACKAGE"
dpkg-deb -f "$deb" Depends >"$staging/depends"
echo "$got" >"$staging/version"
check_libraries "$staging/$LIB_IN_PACKAGE" "$staging/depends"
# The package's json names the library by file name only (found through the system's paths); ours names it where
# it lies (a path JSON would need escaped was refused above).
api="$(sed -nE 's/.*"api_version": *"([0-9.]+)".*/\1/p' "$staging/usr/share/vulkan/icd.d/lvp_icd.json")"
[[ -n "$api" ]] || die "no api_version in $PACKAGE $got's lvp_icd.json"
printf '{\n  "file_format_version": "1.0.0",\n  "ICD": {\n    "library_path": "%s",\n    "api_version": "%s"\n  }\n}\n' \
  "$lib" "$api" >"$staging/lvp_icd.json"
# Only lavapipe is used: the package's hardware drivers, layers and their jsons (~50 MB) go; its copyright stays.
find "$staging/usr/lib" -type f ! -name libvulkan_lvp.so -delete
rm -r "$staging/usr/share/vulkan"
publish_copy
echo "$json"
