#!/usr/bin/env bash
# Unpacks Orthanc 1.12.7 and its PostgreSQL plugins (Debian 13 "trixie" packages) into a private
# cache folder, so that the tests can run a newer server than Debian 12's own 1.10.1 next to it.
# Nothing on the system changes: apt runs with its own sources list, lists, cache and an empty
# dpkg status in a temporary folder, so it needs no root, and the packages are unpacked with
# `dpkg-deb -x`, never installed. The tests start the server through the prefix's own dynamic
# loader (see test/helpers/orthanc.ts), because trixie's libraries need trixie's glibc.
#
#   ORTHANC_112_ROOT  the prefix (default: ${XDG_CACHE_HOME:-$HOME/.cache}/orthanc-replicate/orthanc-1.12.7)
#   DEBIAN_MIRROR     the Debian archive to download from (default: http://deb.debian.org/debian)
#
# Does nothing when the prefix is complete; delete the folder to install again.
set -euo pipefail

readonly ORTHANC_VERSION=1.12.7
readonly SUITE=trixie
readonly PACKAGES=(orthanc orthanc-postgresql dcmtk-data)
root="${ORTHANC_112_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/orthanc-replicate/orthanc-$ORTHANC_VERSION}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# The harness reads this file; it is written last, so its presence means the prefix is complete.
manifest="$root/orthanc-replicate-prefix.json"

if [ -f "$manifest" ]; then
  echo "Orthanc $ORTHANC_VERSION: already installed in $root"
  exit 0
fi

arch="$(dpkg --print-architecture)"
case "$arch" in
  amd64) triplet=x86_64-linux-gnu loader=ld-linux-x86-64.so.2 ;;
  arm64) triplet=aarch64-linux-gnu loader=ld-linux-aarch64.so.1 ;;
  *) echo "install-orthanc-1.12: no recipe for architecture $arch" >&2; exit 1 ;;
esac
for tool in apt-get apt-cache dpkg-deb; do
  command -v "$tool" >/dev/null 2>&1 || { echo "install-orthanc-1.12: needs $tool (a Debian or Ubuntu system)" >&2; exit 1; }
done

# Bookworm's debian-archive-keyring (2023.3+deb12u1 and later) holds trixie's keys, and the archive
# also signs trixie with bookworm's key: apt verifies trixie's Release file with keys the system
# already trusts. Signature checks stay on.
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -r "$keyring" ] || { echo "install-orthanc-1.12: $keyring is missing; install debian-archive-keyring" >&2; exit 1; }

# A folder without the manifest is not ours to replace: the variable may point somewhere else by mistake.
if [ -e "$root" ] && [ -n "$(ls -A "$root" 2>/dev/null)" ]; then
  echo "install-orthanc-1.12: $root exists but holds no complete install; delete it, or set ORTHANC_112_ROOT elsewhere" >&2
  exit 1
fi

started=$SECONDS
mkdir -p "$(dirname "$root")"
work="$(mktemp -d "${TMPDIR:-/tmp}/orthanc-112-install.XXXXXX")"
staging="$(mktemp -d "$root.partial.XXXXXX")"
trap 'rm -rf "$work" "$staging"' EXIT
# As root, apt downloads as the unprivileged _apt user, which must be able to reach these folders.
chmod 755 "$work"
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/parts" "$work/debs"
if [ "$(id -u)" -eq 0 ] && id _apt >/dev/null 2>&1; then chown _apt "$work/debs"; fi
: >"$work/status"
echo "deb [signed-by=$keyring] $mirror $SUITE main" >"$work/sources.list"

apt_options=(
  -o "Dir::Etc::sourcelist=$work/sources.list"
  -o "Dir::Etc::sourceparts=$work/parts"
  -o "Dir::Etc::preferences=$work/parts/none"
  -o "Dir::Etc::preferencesparts=$work/parts"
  -o "Dir::State::Lists=$work/lists"
  -o "Dir::State::status=$work/status"
  -o "Dir::Cache=$work/cache"
  -o "APT::Architecture=$arch"
  -o "APT::Architectures=$arch"
  -o "Acquire::Languages=none"
)

echo "Fetching the $SUITE package lists from $mirror"
if ! apt-get "${apt_options[@]}" -q update >"$work/update.log" 2>&1 || grep -q -e '^E:' -e 'GPG error' "$work/update.log"; then
  cat "$work/update.log" >&2
  echo "install-orthanc-1.12: apt-get update for $SUITE failed. If a key is missing, upgrade debian-archive-keyring." >&2
  exit 1
fi

candidate="$(apt-cache "${apt_options[@]}" policy orthanc | awk '/Candidate:/ {print $2}')"
case "$candidate" in
  "$ORTHANC_VERSION"+*) ;;
  *) echo "install-orthanc-1.12: $SUITE offers orthanc $candidate, not $ORTHANC_VERSION" >&2; exit 1 ;;
esac

# The whole dependency closure, libc included: the prefix must not mix in bookworm's libraries.
mapfile -t closure < <(
  apt-cache "${apt_options[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
    --no-breaks --no-replaces --no-enhances "${PACKAGES[@]}" | grep -v -e '^ ' -e '^<' | sort -u
)
echo "Downloading orthanc $candidate and ${#closure[@]} packages in all"
(cd "$work/debs" && apt-get "${apt_options[@]}" -q download "${closure[@]}" >"$work/download.log" 2>&1) || {
  cat "$work/download.log" >&2
  exit 1
}
downloaded_mb=$(($(du -sk "$work/debs" | cut -f1) / 1024))

echo "Unpacking into $root"
for deb in "$work/debs"/*.deb; do dpkg-deb -x "$deb" "$staging"; done
# Unpacked as root, a few helpers (unix_chkpwd...) keep their setgid bit: no use here, and a risk.
find "$staging" -type f -perm /6000 -exec chmod ug-s {} +

library_dir="usr/lib/$triplet"
run_prefix() {
  "$staging/$library_dir/$loader" --library-path "$staging/$library_dir" "$@"
}
# Proves that the loader finds every library the server and its plugins need inside the prefix.
for binary in usr/sbin/Orthanc usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so usr/share/orthanc/plugins/libOrthancPostgreSQLStorage.so; do
  missing="$(run_prefix --list "$staging/$binary" | grep 'not found' || true)"
  [ -z "$missing" ] || { echo "install-orthanc-1.12: $binary lacks libraries:" >&2; echo "$missing" >&2; exit 1; }
done
# Kept whole, then cut: piping into `head` could kill the server with SIGPIPE and fail the pipeline.
reported="$(DCMDICTPATH="$staging/usr/share/dcmtk/dicom.dic" run_prefix "$staging/usr/sbin/Orthanc" --version)"
reported="${reported%%$'\n'*}"
case "$reported" in
  *" $ORTHANC_VERSION") ;;
  *) echo "install-orthanc-1.12: the unpacked server says \"$reported\"" >&2; exit 1 ;;
esac

for deb in "$work/debs"/*.deb; do dpkg-deb --show --showformat='${Package}=${Version}\n' "$deb"; done >"$staging/packages.txt"
postgresql_version="$(dpkg-deb -f "$work/debs"/orthanc-postgresql_*.deb Version)"
cat >"$staging/orthanc-replicate-prefix.json" <<EOF
{
  "orthancVersion": "$ORTHANC_VERSION",
  "orthancPackage": "$candidate",
  "postgresqlPluginPackage": "$postgresql_version",
  "suite": "$SUITE",
  "loader": "$library_dir/$loader",
  "libraryPath": ["$library_dir"],
  "binary": "usr/sbin/Orthanc",
  "dicomDictionary": "usr/share/dcmtk/dicom.dic",
  "gconvPath": "$library_dir/gconv",
  "pluginsDir": "usr/share/orthanc/plugins"
}
EOF

# Renaming the finished folder into place means a concurrent reader sees all of it or nothing.
rmdir "$root" 2>/dev/null || true
if ! mv -T "$staging" "$root" 2>/dev/null; then
  [ -f "$manifest" ] || { echo "install-orthanc-1.12: could not move the prefix to $root" >&2; exit 1; }
  echo "Orthanc $ORTHANC_VERSION: another run installed it in $root meanwhile"
  exit 0
fi
echo "Orthanc $ORTHANC_VERSION ($candidate, PostgreSQL plugins $postgresql_version): installed in $root" \
  "(${#closure[@]} packages, ${downloaded_mb} MB downloaded, $((SECONDS - started)) s)"
