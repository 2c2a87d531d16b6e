#!/bin/sh
# Hand the start build's agent token to the agent supervisor (see agent-supervise.sh).
set -eu
mkdir -p "$AGENT_DIR"
if [ -z "$AGENT_TOKEN" ]; then
  echo "no new agent token (a claim build): the running agent keeps its token"
  exit 0
fi
umask 077
printf '%s' "$AGENT_TOKEN" > "$AGENT_DIR/token.new"
mv "$AGENT_DIR/token.new" "$AGENT_DIR/token"
# A running agent holds the previous token, which the server no longer accepts: restart it with the new one.
if [ -f "$AGENT_DIR/agent.pid" ]; then
  kill "$(cat "$AGENT_DIR/agent.pid")" 2>/dev/null || true
fi
echo "agent token updated"
