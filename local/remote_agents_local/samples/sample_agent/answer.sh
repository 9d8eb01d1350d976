#!/usr/bin/env bash
# A stand-in research agent with no network needs: it takes the query from $AGENT_QUERY (or
# stdin) and answers with what it would research. Real agents (Dexter) plug in the same way.
set -euo pipefail
query="${AGENT_QUERY:-$(cat)}"
printf 'sample-agent (%s) researching: %s\n' "$(cat VERSION)" "$query"
printf 'words in the query: %s\n' "$(printf '%s' "$query" | wc -w)"
