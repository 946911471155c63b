#!/usr/bin/env bash
# Fetch the cut-out photos `vl-distill render-cutouts` composites (config/render_cutouts.yaml):
# the stamps of Debian's tuxpaint-stamps-default (GPL-2; RGBA photos of animals, food,
# dishes, tools, plants, vehicles, ... with a one-line English description each) into DEST
# (default data/tuxpaint), without installing the package and without root: `apt-get
# download`, then only the stamps' *.png and *.txt out of its data archive (about 60 MB;
# the package's sounds are left out). Nothing is copied into the repository, and the crops
# made from them are training data only. A machine with the package installed needs none
# of this: point source_dir at /usr/share/tuxpaint/stamps. Exit status 0 when they are there.
set -euo pipefail
DEST=${1:-data/tuxpaint}
INNER=usr/share/tuxpaint/stamps
if [ -d "$DEST/$INNER/food" ] && [ -d "$DEST/$INNER/animals" ]; then
    exit 0
fi
command -v apt-get >/dev/null || { echo "fetch_cutouts: no apt-get here" >&2; exit 1; }
work=$(mktemp -d)
partial="$DEST/.fetch_cutouts.partial"
trap 'rm -rf "$work" "$partial"' EXIT
(cd "$work" && apt-get download tuxpaint-stamps-default >/dev/null 2>&1) || {
    echo "fetch_cutouts: apt-get download tuxpaint-stamps-default failed (no Debian archive?)" >&2
    exit 1
}
# unpacked beside DEST and renamed into place when whole (only the stamps' folder and the
# copyright's are replaced): an interrupted run left some of the folders, which the check
# above then took for a complete fetch
DOC=usr/share/doc/tuxpaint-stamps-default
mkdir -p "$DEST"
rm -rf "$partial"
mkdir "$partial"
dpkg-deb --fsys-tarfile "$work"/tuxpaint-stamps-default_*.deb | tar -x -C "$partial" \
    --wildcards "./$INNER/*.png" "./$INNER/*.txt" "./$DOC/copyright"
[ -d "$partial/$INNER/food" ] || { echo "fetch_cutouts: no stamps in the package" >&2; exit 1; }
for dir in "$DOC" "$INNER"; do        # the stamps last: their folder marks a whole fetch
    mkdir -p "$(dirname "$DEST/$dir")"
    rm -rf "${DEST:?}/$dir"
    mv "$partial/$dir" "$DEST/$dir"
done
echo "fetch_cutouts: $(find "$DEST/$INNER" -name '*.png' | wc -l) stamps in $DEST/$INNER"
