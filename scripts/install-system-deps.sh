#!/usr/bin/env bash
# Installs what the demo and the tests need from Debian/Ubuntu packages: Orthanc, its
# PostgreSQL plugin and a PostgreSQL server (back-end migration tests), nginx (HTTPS tests),
# openssl (throwaway certificates), bsdtar (a second tar reader for the archive tests) and
# curl (the benchmark's ingest ceiling), and the Debian archive keyring that
# scripts/install-orthanc-1.12.sh verifies Debian 13's packages with (Ubuntu lacks it).
# Skips apt-get when everything is already there.
set -euo pipefail

need=()
command -v Orthanc >/dev/null 2>&1 || [ -x /usr/sbin/Orthanc ] || need+=(orthanc)
[ -e /usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so ] || need+=(orthanc-postgresql)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v bsdtar >/dev/null 2>&1 || need+=(libarchive-tools)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v age >/dev/null 2>&1 || need+=(age)
[ -r /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)

if [ ${#need[@]} -eq 0 ]; then
  echo "System packages: all present."
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "Need root (or sudo) to install: ${need[*]}" >&2; exit 1; }
  sudo="sudo"
fi

echo "Installing: ${need[*]}"
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
