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

readonly PACKAGE=mesa-vulkan-drivers VERSION=25.0.7-2~bpo12+1 MIN_MAJOR=25
readonly LIB_IN_PACKAGE=usr/lib/x86_64-linux-gnu/libvulkan_lvp.so
readonly KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
PATH="$PATH:/usr/sbin:/sbin" # ldconfig lives there; appended, so a PATH entry the caller chose comes first

die() {
  printf 'tools/lavapipe.sh: %s\n' "$*" >&2
  exit 1
}

install_missing=false
dir=
for arg in "$@"; do
  case "$arg" in
    --install-missing) install_missing=true ;;
    -h | --help)
      sed -n '2,14s/^# \{0,1\}//p' "$0" >&2
      exit 0
      ;;
    -*) die "unknown option $arg (usage: tools/lavapipe.sh [--install-missing] [DIR])" ;;
    *)
      [[ -z "$dir" ]] || die "one DIR only (usage: tools/lavapipe.sh [--install-missing] [DIR])"
      dir="$arg"
      ;;
  esac
done
dir="${dir:-${XDG_CACHE_HOME:-$HOME/.cache}/mega-asr/lavapipe}"
mkdir -p "$(dirname "$dir")"
dir="$(cd "$(dirname "$dir")" && pwd -P)/$(basename "$dir")" # the json must name the library by an absolute path
readonly json="$dir/lvp_icd.json" lib="$dir/$LIB_IN_PACKAGE"
[[ "$dir" != *[\"\\]* ]] || die "DIR must not contain \" or \\ (the ICD json names the driver by its path): $dir"

# Installs Debian packages with the system's own apt, only when allowed; else says which ones to install.
provide() {
  local why="$1"
  shift
  if $install_missing && ((EUID == 0)); then
    echo "installing $* ($why)" >&2
    apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2
  else
    die "$why: install the Debian package(s) $* (apt-get install $*), or run this script as root with --install-missing"
  fi
}

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
if [[ -f "$json" && -f "$lib" && -f "$dir/depends" ]]; then
  check_libraries "$lib" "$dir/depends"
  echo "$json"
  exit 0
fi

for tool in apt-get dpkg-deb flock; do command -v "$tool" >/dev/null || die "$tool not found: this script needs a Debian or Ubuntu system"; done
[[ -f "$KEYRING" ]] || provide "the Debian archive key $KEYRING is missing" debian-archive-keyring

# One download at a time (test files run in parallel processes); a run that waited finds the copy made.
exec 9>"$dir.lock"
flock 9
if [[ -f "$json" && -f "$lib" && -f "$dir/depends" ]]; then
  echo "$json"
  exit 0
fi
# DIR appears whole, by one rename, with its depends file: anything else there is not ours to remove.
if [[ -e "$dir" ]]; then
  [[ -f "$dir/depends" ]] || die "$dir exists and is not a lavapipe copy made by this script: choose another DIR, or remove it"
  echo "$dir is incomplete (a file was removed?): making it again" >&2
  rm -rf "$dir"
fi
rm -rf "$dir".staging.* # left by a run that was killed

work="$(mktemp -d)"
staging="$(mktemp -d "$dir.staging.XXXXXX")"
trap 'rm -rf "$work" "$staging"' EXIT
# As root, apt downloads as the user _apt: it must be able to enter these folders and write where the .deb goes.
chmod 755 "$work"
mkdir -p "$work/sources.list.d" "$work/lists/partial" "$work/cache/archives/partial" "$work/deb"
if ((EUID == 0)) && id _apt >/dev/null 2>&1; then chown _apt "$work/deb"; fi
cat >"$work/sources.list.d/backports.sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: $KEYRING
EOF
apt_private=(
  -o "Dir::Etc::sourcelist=/dev/null"
  -o "Dir::Etc::sourceparts=$work/sources.list.d"
  -o "Dir::State::Lists=$work/lists"
  -o "Dir::Cache=$work/cache"
)
echo "downloading $PACKAGE $VERSION from bookworm-backports into $dir (unpacked, not installed)" >&2
apt-get "${apt_private[@]}" -q update >&2 || die "apt-get update of bookworm-backports failed (network? proxy?)"
if ! (cd "$work/deb" && apt-get "${apt_private[@]}" -q download "$PACKAGE=$VERSION" >&2); then
  echo "$PACKAGE $VERSION is no longer in bookworm-backports: taking the newest build there" >&2
  (cd "$work/deb" && apt-get "${apt_private[@]}" -q download "$PACKAGE" >&2) || die "apt-get download $PACKAGE from bookworm-backports failed"
fi
deb="$(echo "$work/deb/${PACKAGE}"_*.deb)"
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
mv -T "$staging" "$dir"
chmod 755 "$dir"
echo "$json"
