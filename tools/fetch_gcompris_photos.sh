#!/usr/bin/env bash
# Fetch the real photos of bench/real_photos_gcompris.json: the photographs of tools and
# household things of GCompris's categorisation activity (Debian's gcompris-qt-data; each
# folder's README gives every photo's author, source and licence: public domain, CC0,
# CC BY, CC BY-SA), into DEST (default data/gcompris), without installing the package and
# without root: `apt-get download`, then only categorization.rcc out of its data archive,
# and tools/qt_rcc.py takes the two folders of photos out of that Qt resource file (the
# package keeps its pictures only in such files). Nothing is copied into the repository;
# the photos are a test set only, never training data. Exit status 0 when they are there.
set -euo pipefail
DEST=${1:-data/gcompris}
HERE=$(cd "$(dirname "$0")" && pwd)
RCC=usr/share/gcompris-qt/rcc/categorization.rcc
IMAGES=gcompris/src/activities/categorization/resource/images
if [ -s "$DEST/categorization/tools/hammer1.webp" ] && [ -s "$DEST/categorization/others/plate.webp" ]; then
    exit 0
fi
command -v apt-get >/dev/null || { echo "fetch_gcompris_photos: no apt-get here" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -s "/$RCC" ]; then
    cp "/$RCC" "$work/categorization.rcc"
else
    (cd "$work" && apt-get download gcompris-qt-data >/dev/null 2>&1) || {
        echo "fetch_gcompris_photos: apt-get download gcompris-qt-data failed (no Debian archive?)" >&2
        exit 1
    }
    dpkg-deb --fsys-tarfile "$work"/gcompris-qt-data_*.deb | tar -x -C "$work" "./$RCC"
    mv "$work/$RCC" "$work/categorization.rcc"
fi
# written beside DEST/categorization and renamed into place when whole: an interrupted run
# left some photos, which the check above then took for a complete fetch
mkdir -p "$DEST"
partial="$DEST/.categorization.partial"
rm -rf "$partial"
for folder in tools others; do
    python3 "$HERE/qt_rcc.py" "$work/categorization.rcc" "$partial/$folder" \
        --under "$IMAGES/$folder"
done
[ -s "$partial/tools/hammer1.webp" ] || {
    echo "fetch_gcompris_photos: no photos in the package" >&2; exit 1; }
rm -rf "$DEST/categorization"
mv "$partial" "$DEST/categorization"
echo "fetch_gcompris_photos: $(find "$DEST/categorization" -name '*.webp' | wc -l) photos in $DEST/categorization"
