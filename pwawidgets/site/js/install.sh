#!/usr/bin/env bash
# The widget manager that draws saved widget state on the course site (@jupyter-widgets/html-manager, BSD-3-Clause),
# from the npm registry: its prebuilt dist/ only, no dependencies. The site builder finds it in ./package/dist.
set -euo pipefail
cd "$(dirname "$0")"
VERSION=1.0.15
if [ ! -f package/dist/embed.js ]; then
  npm pack --silent "@jupyter-widgets/html-manager@$VERSION" >/dev/null
  tar xzf "jupyter-widgets-html-manager-$VERSION.tgz" package/dist package/package.json
  rm "jupyter-widgets-html-manager-$VERSION.tgz"
fi
