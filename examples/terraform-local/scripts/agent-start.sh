#!/bin/sh
# Start the agent supervisor detached with setsid: the build's process group (Terraform and every local-exec)
# is killed when the build ends, and the agent must outlive it. Its output goes to a log file, so it holds
# none of Terraform's pipes.
set -eu
mkdir -p "$AGENT_DIR"
cp "$(dirname "$0")/agent-supervise.sh" "$AGENT_DIR/supervise.sh"
touch "$AGENT_DIR/run"
export HOME_DIR AGENT_COMMAND PREBUILDD_ACCESS_URL
setsid sh "$AGENT_DIR/supervise.sh" "$AGENT_DIR" </dev/null >>"$AGENT_DIR/agent.log" 2>&1 &
echo $! > "$AGENT_DIR/supervisor.pid"
echo "agent started (log: $AGENT_DIR/agent.log)"
