#!/bin/sh
# Writes the Debian changelog of a build: changelog.sh VERSION > changelog.Debian
set -eu
version=$1
date=$(date -R -u -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")
cat <<END
ferry ($version) unstable; urgency=medium

  * Release $version, built by the ferry nightly job.

 -- ferry developers <ferry@ferry-cd.invalid>  $date
END
