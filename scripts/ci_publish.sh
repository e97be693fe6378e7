#!/usr/bin/env bash
# Build a recipe with the shared build cache, verify the artifact, pack it, check the tarball unpacks
# with every hash intact, and only then publish it (copy it and its .sha256 into PUBLISH_DIR).
# Every step that fails stops the script with its exit code: nothing is published unless verify passed.
#
#   scripts/ci_publish.sh RECIPE.yaml PUBLISH_DIR
#
# Environment (all optional):
#   RVC_COMPILE        the command to run (default: rvc-compile), e.g. "python -m rvc_compile.cli"
#   RVC_COMPILE_CACHE  the build cache folder shared between runs (default: the user cache folder)
#   BUILD_ARGS         extra arguments for build (e.g. "--set version=1.2.0")
#   VERIFY_ARGS        extra arguments for verify (e.g. "--skip-latency" on noisy shared runners)
#   DIST_DIR           where the tarball is written before it is published (default: dist)
set -euo pipefail

if [ "$#" -ne 2 ]; then
    echo "usage: $0 RECIPE.yaml PUBLISH_DIR" >&2
    exit 2
fi
recipe=$1
publish_dir=$2
read -r -a rvc <<< "${RVC_COMPILE:-rvc-compile}"
read -r -a build_args <<< "${BUILD_ARGS:-}"
read -r -a verify_args <<< "${VERIFY_ARGS:-}"
dist=${DIST_DIR:-dist}

echo "== build $recipe" >&2
# The artifact path is the last line of build's stdout; pipefail makes a failed build fail here.
artifact=$("${rvc[@]}" build "$recipe" ${build_args[@]+"${build_args[@]}"} | tail -n 1)

echo "== verify $artifact" >&2
"${rvc[@]}" verify "$artifact" ${verify_args[@]+"${verify_args[@]}"}

version=$(basename "$artifact")
name=$(basename "$(dirname "$artifact")")
tarball="$dist/$name-$version.tar.gz"
echo "== pack $tarball" >&2
"${rvc[@]}" pack "$artifact" -o "$tarball" > /dev/null

echo "== check the tarball unpacks intact" >&2
check_dir=$(mktemp -d)
trap 'rm -rf "$check_dir"' EXIT
"${rvc[@]}" unpack "$tarball" -o "$check_dir" > /dev/null

if command -v sha256sum > /dev/null; then
    (cd "$dist" && sha256sum "$name-$version.tar.gz" > "$name-$version.tar.gz.sha256")
else  # macOS
    (cd "$dist" && shasum -a 256 "$name-$version.tar.gz" > "$name-$version.tar.gz.sha256")
fi

echo "== publish to $publish_dir" >&2
mkdir -p "$publish_dir"
# Copy under a temporary name, then rename: a reader of PUBLISH_DIR never sees half a tarball.
for file in "$tarball" "$tarball.sha256"; do
    cp "$file" "$publish_dir/.$(basename "$file").partial"
    mv "$publish_dir/.$(basename "$file").partial" "$publish_dir/$(basename "$file")"
done
echo "$publish_dir/$name-$version.tar.gz"
