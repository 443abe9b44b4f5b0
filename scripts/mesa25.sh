#!/usr/bin/env bash
# Unpacks Mesa 25.0.7's lavapipe from Debian's bookworm-backports into a folder beside the
# system's Mesa (nothing is installed over it) and prints the path of an ICD file that selects
# it: `VK_ICD_FILENAMES=$(bash scripts/mesa25.sh) cargo test` runs the tests on that driver.
# The folder defaults to target/mesa-25 (ignored by git); a second call reuses it.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-$PWD/target/mesa-25}"
icd="$dir/lvp_icd.json"
if [ -f "$icd" ]; then
    echo "$icd"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    cat >/etc/apt/sources.list.d/bilevel-backports.sources <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    apt-get update -qq >&2
fi
debs=$(mktemp -d)
chmod 777 "$debs" # apt-get download drops to the _apt user
(cd "$debs" && apt-get download -qq \
    mesa-vulkan-drivers/bookworm-backports \
    libdrm2/bookworm-backports \
    libdrm-amdgpu1/bookworm-backports >&2)
mkdir -p "$dir/root"
for deb in "$debs"/*.deb; do
    dpkg -x "$deb" "$dir/root"
done
rm -rf "$debs"
lib="$dir/root/usr/lib/x86_64-linux-gnu/libvulkan_lvp.so"
[ -f "$lib" ] || { echo "mesa25.sh: no lavapipe in the unpacked packages ($lib)" >&2; exit 1; }
# The package's ICD names the library bare; an absolute path selects this copy.
sed "s#\"library_path\": *\"[^\"]*\"#\"library_path\": \"$lib\"#" \
    "$dir/root/usr/share/vulkan/icd.d/lvp_icd.json" >"$icd.tmp"
mv "$icd.tmp" "$icd"
echo "$icd"
