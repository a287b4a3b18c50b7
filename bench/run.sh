#!/bin/sh
# Load, latency and memory figures of callwake (see README.md, "Calls under
# load"). SIPp must be installed (apt-get install -y sip-tester).
#
#   bench/run.sh                      # the full run (~15 min); writes the figures into bench/README.md
#   bench/run.sh -quick               # every phase, small (< 2 min); writes nothing but bench/results/
#   bench/run.sh -flows 2 -rates 200,400 -phases steps
#
# Flags: -quick -flows -rates -step -phases -extensions -growth-calls -readme
# (bench/loadtest/load_test.go). Each run's profiles, goroutine dumps and
# report go to bench/results/<date>-<time>/.
set -eu
cd "$(dirname "$0")/.."
CALLWAKE_LOAD=1 exec go test ./bench/loadtest -run '^TestLoad$' -count=1 -timeout 45m -v -args "$@"
