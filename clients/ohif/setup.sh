#!/usr/bin/env bash
# Sets up the OHIF browser check (idempotent; a second run does nothing but check):
#   - Debian's chromium (apt) when /usr/bin/chromium is missing;
#   - playwright-core from package-lock.json (npm ci) into clients/ohif/node_modules;
#   - the published OHIF v3 viewer build: the dist/ folder of the @ohif/app tarball named in
#     package.json ("ohifApp"), fetched with `npm pack`, its sha512 checked, unpacked into
#     clients/ohif/ohif-dist/.
# @ohif/app is not an npm dependency on purpose: npm cannot resolve its dependency tree from the
# registry this project reaches (@ohif/i18n 3.x is not there), and the built dist/ is
# self-contained (webpack bundles + wasm), so none of that tree is needed to serve it.
# Prints the time taken and the sizes.
# --build-only: only the OHIF build (what `static-dicomweb serve --viewer` and `make view` need; no
# root, no browser).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
start=$(date +%s)
build_only=0
[[ "${1:-}" == "--build-only" ]] && build_only=1

if [[ $build_only == 0 && ! -x /usr/bin/chromium ]]; then
    echo "installing chromium (apt) ..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium > /dev/null
fi

# npm ci when node_modules does not hold exactly the locked versions
locked=$(node -p 'const p=require("./package-lock.json").packages; Object.keys(p).filter(k=>k).map(k=>k+"@"+p[k].version).join(" ")')
installed=$(node -p 'const fs=require("fs"); const f="./node_modules/.package-lock.json";
    if (!fs.existsSync(f)) ""; else { const p=require(f).packages;
    Object.keys(p).filter(k=>k && fs.existsSync(k+"/package.json")).map(k=>k+"@"+require("./"+k+"/package.json").version).join(" ") }')
if [[ $build_only == 0 && "$locked" != "$installed" ]]; then
    echo "npm ci (playwright-core) ..."
    npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
fi

spec=$(node -p 'require("./package.json").ohifApp.spec')
want=$(node -p 'require("./package.json").ohifApp.integrity')
if [[ ! -f ohif-dist/.integrity || "$(cat ohif-dist/.integrity)" != "$want" || ! -f ohif-dist/index.html ]]; then
    echo "fetching the OHIF viewer build ($spec) ..."
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    tarball=$(npm pack "$spec" --pack-destination "$tmp" --loglevel=error | tail -1)
    got=$(node -e 'const c=require("crypto"),f=require("fs");
        console.log("sha512-"+c.createHash("sha512").update(f.readFileSync(process.argv[1])).digest("base64"))' \
        "$tmp/$tarball")
    if [[ "$got" != "$want" ]]; then
        echo "setup.sh: $spec: integrity $got, expected $want" >&2
        exit 3
    fi
    tar -xzf "$tmp/$tarball" -C "$tmp" package/dist package/package.json
    rm -rf ohif-dist.tmp ohif-dist
    mv "$tmp/package/dist" ohif-dist.tmp
    cp "$tmp/package/package.json" ohif-dist.tmp/.package.json
    echo "$want" > ohif-dist.tmp/.integrity
    mv ohif-dist.tmp ohif-dist
fi

test -f ohif-dist/index.html -a -f ohif-dist/app-config.js
if [[ $build_only == 1 ]]; then
    echo "OHIF build ready in $(( $(date +%s) - start )) s: ohif-dist $(du -sh ohif-dist | cut -f1)" \
         "($(node -p 'require("./ohif-dist/.package.json").name+"@"+require("./ohif-dist/.package.json").version'))"
    exit 0
fi
node --input-type=module -e 'await import("playwright-core")'
echo "ready in $(( $(date +%s) - start )) s: $(/usr/bin/chromium --version 2>/dev/null);" \
     "node_modules $(du -sh node_modules | cut -f1), ohif-dist $(du -sh ohif-dist | cut -f1)" \
     "($(node -p 'require("./ohif-dist/.package.json").name+"@"+require("./ohif-dist/.package.json").version'))"
