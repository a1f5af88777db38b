#!/usr/bin/env bash
# Re-vendors the admin page's third-party assets from npm (run by hand when upgrading;
# the build never touches the network). Writes, next to this script:
#   bootstrap/bootstrap.min.css + LICENSE          (Bootstrap, MIT)
#   bootstrap-icons/icons.svg + LICENSE            (a <symbol> sprite of the ICONS below, MIT)
# The page needs no Bootstrap JavaScript: its few controls are plain buttons and selects
# driven by dashboards/admin/static/dashboard.js.
set -euo pipefail

BOOTSTRAP_VERSION=5.3.8
ICONS_VERSION=1.13.2
# The icons the page uses (dashboard.js and metrics.html refer to them by these ids).
ICONS=(
    activity app-indicator arrow-down-short arrow-repeat arrow-up-short bar-chart-line
    calendar-week calendar3 cash-coin chat-dots clock dash diagram-3 download
    exclamation-triangle-fill file-earmark-bar-graph file-earmark-text filetype-csv globe2
    graph-up-arrow grid-3x3-gap hourglass-split lightning-charge lock-fill magnet
    pause-circle pencil-square people-fill person-check phone play-circle printer
    question-circle receipt trophy ui-checks wallet2
)

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf -- "$WORK"' EXIT
cd "$WORK"
npm pack --silent "bootstrap@$BOOTSTRAP_VERSION" "bootstrap-icons@$ICONS_VERSION" >/dev/null
mkdir bootstrap icons
tar xzf "bootstrap-$BOOTSTRAP_VERSION.tgz" -C bootstrap --strip-components=1
tar xzf "bootstrap-icons-$ICONS_VERSION.tgz" -C icons --strip-components=1

mkdir -p "$HERE/bootstrap" "$HERE/bootstrap-icons"
# The source-map comment would make browsers' devtools ask for a file we do not serve.
sed '/sourceMappingURL/d' bootstrap/dist/css/bootstrap.min.css >"$HERE/bootstrap/bootstrap.min.css"
cp bootstrap/LICENSE "$HERE/bootstrap/LICENSE"
cp icons/LICENSE "$HERE/bootstrap-icons/LICENSE"

python3 - "$ICONS_VERSION" "${ICONS[@]}" >"$HERE/bootstrap-icons/icons.svg" <<'PY'
import re, sys
version, names = sys.argv[1], sys.argv[2:]
out = [f'<svg xmlns="http://www.w3.org/2000/svg"><!-- Bootstrap Icons {version} (MIT), a subset: dashboards/admin/vendor/update.sh -->']
for name in names:
    svg = open(f"icons/icons/{name}.svg", encoding="utf-8").read()
    body = re.search(r"<svg[^>]*>(.*)</svg>", svg, re.S).group(1).strip()
    body = re.sub(r"\s*\n\s*", "", body)
    out.append(f'<symbol id="{name}" viewBox="0 0 16 16">{body}</symbol>')
out.append("</svg>")
print("\n".join(out))
PY
echo "vendored Bootstrap $BOOTSTRAP_VERSION and ${#ICONS[@]} Bootstrap Icons $ICONS_VERSION into $HERE"
