#!/bin/sh
# Stop the agent supervisor and the agent: they are one process group (started with setsid).
dir=$1
rm -f "$dir/run"
if [ -f "$dir/supervisor.pid" ]; then
  kill -TERM "-$(cat "$dir/supervisor.pid")" 2>/dev/null || true
  rm -f "$dir/supervisor.pid" "$dir/agent.pid"
fi
echo "agent stopped"
