#!/bin/sh
# Write who the workspace is for (the prebuilds user until a claim, then its user) and their editor.
set -eu
mkdir -p "$HOME_DIR"
printf 'owner=%s\nworkspace=%s\neditor=%s\n' "$OWNER" "$WORKSPACE" "$EDITOR" > "$HOME_DIR/.profile.new"
mv "$HOME_DIR/.profile.new" "$HOME_DIR/.profile"
echo "profile written for $OWNER ($WORKSPACE, editor $EDITOR)"
