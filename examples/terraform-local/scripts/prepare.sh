#!/bin/sh
# Prepare the workspace directory; the sleep stands in for cloning and installing dependencies.
set -eu
mkdir -p "$HOME_DIR"
n=${SETUP_SECONDS%.*}
i=0
while [ "$i" -lt "$n" ]; do
  i=$((i + 1))
  echo "setup step $i/$n"
  sleep 1
done
echo "# $PROJECT" > "$HOME_DIR/README.md"
echo "prepared $HOME_DIR"
