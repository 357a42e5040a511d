#!/usr/bin/env bash
# The arrows of the house (docs/architecture.md): which part may import which. Fails, naming
# file and line, on an import in a forbidden direction:
#   vocab   imports no other part (both sides of the wire use it, neither owns it);
#   config  is data: it imports no edge, dispatch or compute;
#   compute (the gRPC server) imports no edge or dispatch;
#   edge    (the HTTP side) imports no compute: it talks to compute over gRPC, via dispatch;
#   dispatch imports no edge or compute;
#   store   imports no edge, dispatch or compute.
set -euo pipefail
cd "$(dirname "$0")/.."

failed=0
forbid() { # forbid DIR PATTERN WHY
    local hits
    if hits=$(grep -rnE "$2" "src/$1" --include='*.rs'); then
        echo "layering: src/$1 must not import $3:" >&2
        echo "$hits" >&2
        failed=1
    fi
}
forbid vocab    'crate::(edge|dispatch|compute|config|store)\b' 'another part'
forbid config   'crate::(edge|dispatch|compute)\b'              'edge, dispatch or compute'
forbid compute  'crate::(edge|dispatch)\b'                      'edge or dispatch'
forbid edge     'crate::compute\b'                              'compute'
forbid dispatch 'crate::(edge|compute)\b'                       'edge or compute'
forbid store    'crate::(edge|dispatch|compute)\b'              'edge, dispatch or compute'
if [ "$failed" = 0 ]; then echo "layering: every import goes in an allowed direction"; fi
exit "$failed"
