#!/usr/bin/env bash
# The browser the browser tests drive: Debian's Chromium and a CJK font (Chinese in
# screenshots), installed with apt when missing. Idempotent: with both present it returns at
# once. Playwright's own browser download cannot be used (no network but the registries).
set -euo pipefail

have_font() { fc-list :lang=zh 2>/dev/null | grep -q .; }

if [ -x /usr/bin/chromium ] && have_font; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
echo "installing Chromium and a CJK font from Debian's packages (once)" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
  chromium fonts-noto-cjk fontconfig >/dev/null
/usr/bin/chromium --version >&2
