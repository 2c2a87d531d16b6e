#!/bin/sh
# Keep the workspace agent running with the latest token while the workspace is started ($dir/run exists).
# A token the server refused stays refused: after the agent exits, wait for a new token before starting it
# again. The agent records who claimed the workspace in $HOME_DIR/.claimed-by.
dir=$1
while [ -f "$dir/run" ]; do
  token=$(cat "$dir/token" 2>/dev/null || true)
  if [ -n "$token" ]; then
    PREBUILDD_AGENT_TOKEN=$token $AGENT_COMMAND agent \
      --on-claim 'printf "%s\n" "$PREBUILDD_CLAIM_OWNER" > "$HOME_DIR/.claimed-by"' &
    echo $! > "$dir/agent.pid"
    wait $! || true
  fi
  while [ -f "$dir/run" ] && [ "$(cat "$dir/token" 2>/dev/null || true)" = "$token" ]; do
    sleep 1
  done
done
