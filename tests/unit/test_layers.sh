#!/usr/bin/env bash
# test_layers.sh: the source tree keeps its layers (README "Layout"): a file in src/<layer>/ or
# include/drdc/<layer>/ includes project headers of its own layer or the layers below it only,
# bottom up core, shim, formats, data, stages, model, commands; and no command includes a stage
# header (commands talk to the model layer). Prints every violation; fails when there is one.
set -u
cd "${DRDC_SOURCE_DIR:-$(dirname "$0")/../..}" || exit 1
order="core shim formats data stages model commands"
rank() { local i=0; for l in $order; do [ "$l" = "$1" ] && { echo $i; return; }; i=$((i + 1)); done; echo -1; }
bad=0 files=0
while IFS= read -r f; do
    files=$((files + 1))
    layer=$(echo "$f" | sed -E 's#^(src|include/drdc)/([a-z]+)/.*#\2#')
    rl=$(rank "$layer")
    if [ "$rl" -lt 0 ]; then echo "not in a layer folder: $f"; bad=1; continue; fi
    for inc in $(grep -oE '#include "drdc/[a-z_]+/' "$f" | sed -E 's#.*drdc/([a-z_]+)/#\1#'); do
        ri=$(rank "$inc")
        if [ "$ri" -lt 0 ]; then echo "$f includes drdc/$inc/, which is no layer"; bad=1; fi
        if [ "$ri" -gt "$rl" ]; then echo "$f ($layer) includes a header of the $inc layer above it"; bad=1; fi
    done
    if grep -qE '#include "drdc/[a-z_]+\.h"' "$f"; then echo "$f includes a header outside the layer folders"; bad=1; fi
    if [ "$layer" = commands ] && grep -q '#include "drdc/stages/' "$f"; then
        echo "$f: a command includes a stage header ($(grep -o 'drdc/stages/[a-z_]*.h' "$f" | tr '\n' ' '))"; bad=1
    fi
done < <(find src include/drdc -type f \( -name '*.c' -o -name '*.h' -o -name '*.cpp' -o -name '*.hpp' \) | sort)
[ "$files" -gt 40 ] || { echo "found only $files source files: wrong folder?"; exit 1; }
[ "$bad" = 0 ] && echo "layers: $files files, no include runs up a layer, no command includes a stage"
exit "$bad"
