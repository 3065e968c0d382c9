#!/bin/sh
# Issue 22's replication checker, long version (see README.md in this directory):
#
#   sudo tests/nemesis/run_checker.sh --spate target/release/spate --minutes 10 [--seed N] [--workdir DIR]
#
# Runs tests/nemesis/replication_checker.py with the Python in $PYTHON (default python3, which
# needs confluent-kafka and kafka-python: tests/clients/requirements.txt) and passes every
# argument on (`--help` lists them). Prints the fault log and a summary table; exits 0 when
# every check held, 1 on a violation (its details, the seed and where the node logs are kept
# are printed), 2 when it cannot run here (not root, no `ip`).
here=$(dirname "$0")
exec "${PYTHON:-python3}" "$here/replication_checker.py" "$@"
