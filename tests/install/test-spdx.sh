#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# Every C, header, Python and shell source carries an SPDX-License-Identifier line in
# its first 5 lines (LICENSING.md says which licence where). Lists the files git tracks;
# in an unpacked tarball (no git), every such file under the source tree.
set -eu
srcdir=$(cd "${top_srcdir:-$(dirname "$0")/../..}" && pwd)
cd "$srcdir"
list() {
    # git's list only when this tree is the repository's top (not a tarball unpacked inside it)
    if [ "$(git rev-parse --show-toplevel 2>/dev/null)" = "$srcdir" ]; then
        git ls-files
    else
        find . -type f ! -path './_build/*' ! -path './autom4te.cache/*' | sed 's|^\./||'
    fi
}
missing=0 checked=0
for f in $(list); do
    case "$f" in
    *.c | *.h | *.py | *.sh) ;;
    build-aux/* | config.h | */helper-introspect.c) continue ;; # generated
    *)  # scripts without an extension: by their #! line
        [ -f "$f" ] && head -c 64 "$f" | head -n 1 | grep -Eq '^#!.*(sh|bash|python3?)( |$)' || continue ;;
    esac
    [ -f "$f" ] || continue
    checked=$((checked + 1))
    if ! head -n 5 "$f" | grep -q 'SPDX-License-Identifier: [A-Za-z0-9.+-]'; then
        echo "no SPDX-License-Identifier line in the first 5 lines: $f"
        missing=$((missing + 1))
    fi
done
echo "$checked files checked, $missing without an SPDX line"
[ "$missing" -eq 0 ]
