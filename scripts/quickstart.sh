#!/usr/bin/env bash
# Quickstart, step 1 of 2: installs what is missing (Orthanc and the test services from
# Debian/Ubuntu packages, a private Orthanc 1.12.7 for the tests, npm packages), builds, and
# runs the demo on throwaway local servers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system-deps.sh
# Not through sudo: the copy goes to this user's cache folder, where the tests look for it.
bash scripts/install-orthanc-1.12.sh
npm ci --no-audit --no-fund
npm run build
node --import tsx scripts/demo.ts
