#!/usr/bin/env bash
# Every relative link in the Markdown files at the top of DIR and in DIR/docs resolves to a
# file inside DIR. Run by .ci/run on the unpacked `cargo package` output, so README's links
# work on crates.io; on the repository itself it checks the same links.
#   scripts/check_package_links.sh DIR
set -euo pipefail
root="${1:?usage: scripts/check_package_links.sh DIR}"
broken=0
checked=0
for md in "$root"/*.md "$root"/docs/*.md; do
    [ -e "$md" ] || continue
    dir="$(dirname "$md")"
    # Markdown links and images: ](target) or ](target "title").
    while IFS= read -r target; do
        target="${target%% *}"
        target="${target%%#*}"
        case "$target" in "" | http://* | https://* | mailto:*) continue ;; esac
        checked=$((checked + 1))
        if [ ! -e "$dir/$target" ]; then
            echo "broken link in ${md#"$root"/}: $target"
            broken=1
        fi
    done < <(grep -oE '\]\([^)]+\)' "$md" | sed -E 's/^\]\((.*)\)$/\1/')
done
echo "$checked relative links checked in $root"
exit "$broken"
