#!/usr/bin/env bash
# Measures the server time of each dashboard page over a store seeded with N hosts (default
# 1000) that each ran 50 jobs, in a release build: the fleet (first and last page, filtered),
# the jobs, a job with every host's timeline, a host, the lock and the releases.
#
#   bench/dashboard.sh [N]
#
# The pages are asked of the dashboard's router in-process (no TLS, no browser), each once after
# the store is filled; the figures are what the master spends building them.
set -euo pipefail
cd "$(dirname "$0")/.."
hosts=${1:-1000}
BRINE_BENCH_HOSTS=$hosts cargo test --release -q -p brine-master --lib \
  dashboard::tests::every_page_of_a_fleet_of_a_thousand_hosts_is_served -- --nocapture 2>&1 |
  grep '^page ' | sed "s/^/$hosts hosts, /"
