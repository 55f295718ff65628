#!/usr/bin/env bash
# Nature photos for photo-scene training data (`spectral-jax synth --from-photos
# DIR`, or `--config.data.synthetic.photos=DIR` for training), taken from two
# Debian packages of desktop backgrounds. Run it by hand; nothing in
# spectral_jax downloads at run time, and the photos are not part of the
# repository (do not commit them).
#
#   tools/fetch_photos.sh DIR
#
# Needs apt-get (Debian or Ubuntu; run `apt-get update` first if it cannot find
# the packages) and dpkg-deb. Writes 20 JPEGs into DIR and the packages'
# copyright files into DIR/LICENSES/. Checked with Debian 12 (bookworm):
# mate-backgrounds 1.26.0-1, plasma-workspace-wallpapers 4:5.27.5-2.
#
# The photos and their licences (from each package's
# /usr/share/doc/PACKAGE/copyright; for KDE also each wallpaper's
# metadata.json):
#
# mate-backgrounds, /usr/share/backgrounds/mate/nature/ -- all GPL-2+:
#   mate-Aqua, mate-LadyBird, mate-YellowFlower, mate-Garden
#                          (c) 2008 Charles Barbin
#   mate-Blinds            (c) 2008 Lennart Poettering, Andrea Cimitan
#   mate-Dune              (c) 2007 Marco Cogoni, 2008 Hylke Bons
#   mate-FreshFlower       (c) 2005 Jens Ansorg
#   mate-GreenMeadow       (c) 2005 Timothy Schellhase, 2008 Lapo Calamandrei
#   mate-RainDrops         (c) 2008 "blackcombwhistler07"
#   mate-Storm             (c) 2008 Sergey Nazarov
#   mate-TwoWings          (c) 2008 Charles Barbin, Hylke Bons
#   mate-Wood              (c) 2008 Jean-Francois Fortin Tam
# plasma-workspace-wallpapers, /usr/share/wallpapers/NAME/contents/images/
# 1920x1080.jpg -- Debian's copyright file: GPL-2+ ((c) 2014 KDE Visual
# Design Group); each wallpaper's metadata.json: LGPLv3:
#   kde-Path, kde-OneStandsOut, kde-ColdRipple, kde-DarkestHour, kde-Kite
#                          Risto Saukonpää
#   kde-EveningGlow        Ian Hex
#   kde-FallenLeaf         Martin Klapetek
#   kde-BytheWater         Maciej Wiklo
#
# What they show: grass, leaves, flowers and a forest (Blinds, Dune,
# GreenMeadow, LadyBird, RainDrops, YellowFlower, Garden, Path,
# OneStandsOut), and scenes with little or no vegetation that should stay
# still (water, sky, boats, a jetty, wood, storm clouds).

set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
out=$1
mkdir -p "$out/LICENSES"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

# apt-get download writes into the current directory; as root it warns that
# the _apt user cannot write there, which is harmless.
apt-get download mate-backgrounds plasma-workspace-wallpapers
for deb in ./*.deb; do
  dpkg-deb -x "$deb" root
done

copied=0
for photo in root/usr/share/backgrounds/mate/nature/*.jpg; do
  cp "$photo" "$out/mate-$(basename "$photo")"
  copied=$((copied + 1))
done
for name in Path OneStandsOut ColdRipple DarkestHour Kite EveningGlow FallenLeaf BytheWater; do
  photo=root/usr/share/wallpapers/$name/contents/images/1920x1080.jpg
  if [[ -f $photo ]]; then
    cp "$photo" "$out/kde-$name.jpg"
    copied=$((copied + 1))
  else
    echo "warning: $name not in this plasma-workspace-wallpapers" >&2
  fi
done
cp root/usr/share/doc/mate-backgrounds/copyright "$out/LICENSES/mate-backgrounds.copyright"
cp root/usr/share/doc/plasma-workspace-wallpapers/copyright \
  "$out/LICENSES/plasma-workspace-wallpapers.copyright"
echo "$copied photos in $out (licences in $out/LICENSES)"
