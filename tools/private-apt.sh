# Sourced by tools/python-ort.sh and tools/lavapipe.sh, which bring Debian packages this system lacks (or has too
# old) without installing them: the packages are downloaded with a private apt configuration (its own source,
# lists, cache and an empty dpkg status) and unpacked into a folder of their own, DIR, so the system's apt sources,
# lists and packages are left alone (but for what --install-missing installs). DIR appears whole, by one rename,
# with a marker file; a DIR that exists without one is not ours, and is refused, never emptied.
# The sourcing script sets SCRIPT (its name in messages) and NAME (what its copy is called, and DIR's default
# folder in the cache), and defines whole (true when DIR holds a complete copy).

readonly KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

die() {
  printf '%s: %s\n' "$SCRIPT" "$*" >&2
  exit 1
}

# Reads the command line, [--install-missing] [DIR]: sets install_missing and dir (absolute, for the paths a copy
# prints; default ${XDG_CACHE_HOME:-$HOME/.cache}/mega-asr/NAME). --help prints the script's header comment.
parse_args() {
  install_missing=false
  dir=
  local arg
  for arg in "$@"; do
    case "$arg" in
      --install-missing) install_missing=true ;;
      -h | --help)
        sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0" >&2
        exit 0
        ;;
      -*) die "unknown option $arg (usage: $SCRIPT [--install-missing] [DIR])" ;;
      *)
        [[ -z "$dir" ]] || die "one DIR only (usage: $SCRIPT [--install-missing] [DIR])"
        dir="$arg"
        ;;
    esac
  done
  dir="${dir:-${XDG_CACHE_HOME:-$HOME/.cache}/mega-asr/$NAME}"
  mkdir -p "$(dirname "$dir")"
  dir="$(cd "$(dirname "$dir")" && pwd -P)/$(basename "$dir")"
}

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

# What a download needs: apt-get, dpkg-deb and flock, and the Debian archive key.
need_apt() {
  local tool
  for tool in apt-get dpkg-deb flock; do command -v "$tool" >/dev/null || die "$tool not found: this script needs a Debian or Ubuntu system"; done
  [[ -f "$KEYRING" ]] || provide "the Debian archive key $KEYRING is missing" debian-archive-keyring
}

# Takes DIR's lock (one download at a time: test files run in parallel processes); a run that waited finds the copy
# made, prints RESULT and exits. Else clears the way for a new copy whose marker file is MARKER, and sets work (a
# folder for apt) and staging (DIR to be, renamed into place by publish_copy), both removed on exit.
begin_copy() {
  local marker="$1" result="$2"
  exec 9>"$dir.lock"
  flock 9
  if whole; then
    echo "$result"
    exit 0
  fi
  if [[ -e "$dir" ]]; then
    [[ -f "$dir/$marker" ]] || die "$dir exists and is not a $NAME copy made by this script: choose another DIR, or remove it"
    echo "$dir is incomplete (a file was removed?): making it again" >&2
    rm -rf "$dir"
  fi
  rm -rf "$dir".staging.* # left by a run that was killed
  work="$(mktemp -d)"
  staging="$(mktemp -d "$dir.staging.XXXXXX")"
  trap 'rm -rf "$work" "$staging"' EXIT
}

# A private apt configuration in $work for one Debian SUITE, its lists fetched; apt_private holds the options every
# apt-get call takes, and the .deb files go to $work/archives. Its dpkg status is empty: apt resolves a closure
# from SUITE alone, libc6 included, as for an empty system (its locks are taken in $work too). The system's
# sources, pinning and foreign architectures do not apply.
private_apt() {
  local suite="$1"
  # As root, apt downloads as the user _apt: it must be able to enter these folders and write where the .deb go.
  chmod 755 "$work"
  mkdir -p "$work/sources.list.d" "$work/lists/partial" "$work/archives/partial" "$work/state" "$work/admin"
  if ((EUID == 0)) && id _apt >/dev/null 2>&1; then chown -R _apt "$work/archives"; fi
  : >"$work/admin/status"
  cat >"$work/sources.list.d/$suite.sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: $suite
Components: main
Signed-By: $KEYRING
EOF
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
  apt-get "${apt_private[@]}" -q update >&2 || die "apt-get update of $suite failed (network? proxy?)"
}

# Renames the staged copy into place as DIR.
publish_copy() {
  mv -T "$staging" "$dir"
  chmod 755 "$dir"
}
