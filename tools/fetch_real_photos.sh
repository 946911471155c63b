#!/usr/bin/env bash
# Fetch the real photos of bench/real_photos.json and bench/real_photos_ycb_kinds.json that
# Debian's opencv-doc package ships (OpenCV's samples/data: the FILES below) into DEST (default
# data/opencv-doc), without installing the package and without root: `apt-get download`
# then only those files out of its data archive. Nothing is copied into the repository.
# A machine with the package installed needs none of this (bench/real_photos.py also looks
# in /usr/share/doc/opencv-doc/examples/data). Exit status 0 when the photos are there.
set -euo pipefail
DEST=${1:-data/opencv-doc}
INNER=usr/share/doc/opencv-doc/examples/data
FILES=(stuff.jpg blox.jpg smarties.png box_in_scene.png rubberwhale1.png apple.jpg orange.jpg fruits.jpg)
have_all() {
    local f
    for f in "${FILES[@]}"; do [ -s "$1/$f" ] || return 1; done
}
if have_all "/$INNER" || have_all "$DEST/$INNER"; then
    exit 0
fi
command -v apt-get >/dev/null || { echo "fetch_real_photos: no apt-get here" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download opencv-doc >/dev/null 2>&1) || {
    echo "fetch_real_photos: apt-get download opencv-doc failed (no Debian archive?)" >&2
    exit 1
}
mkdir -p "$DEST"
dpkg-deb --fsys-tarfile "$work"/opencv-doc_*.deb | tar -x -C "$DEST" \
    "${FILES[@]/#/./$INNER/}"
have_all "$DEST/$INNER" || { echo "fetch_real_photos: photos missing in opencv-doc" >&2; exit 1; }
echo "fetch_real_photos: ${FILES[*]} in $DEST/$INNER"
