#!/usr/bin/env python3
"""A deterministic sample federation of Copernicus data providers, as STAC items.

It feeds the demo, the tests and the benchmarks of cscale: realistic Sentinel-1/2/3/5P and Landsat Collection 2
items, as EODC, GRNET, CREODIAS, CESNET and INCD (the C-SCALE model) would serve them, streamed at any scale.

How it stays realistic and cheap:

- Every acquisition comes from a small circular-orbit model of its satellite (sun-synchronous, exact repeat
  cycle, reference orbits calibrated on real products), so absolute orbit, relative orbit / WRS-2 path, time of
  day, pass direction, footprint and MGRS tile agree with one another and with the platform's flying dates.
  Land-imaging missions (S1, S2, Landsat) aim at coarse land boxes; S3 and S5P image along the whole orbit.
- Footprints are computed on the sphere and written as RFC 7946 asks: a footprint crossing the antimeridian is
  split into a MultiPolygon and its bbox has minx > maxx.
- Products are made once; each provider holding a product renders it in its own style (ESA names with or
  without CRC, Planetary Computer ids, earth-search ids, stactools ids, USGS ids), so replicas differ as they do
  between real providers. ``generate_with_truth`` tells which items are replicas of one product.
- Streaming and fast: plain dicts and orjson, no per-item pystac/shapely; memory stays bounded at any count.

Host names in links and hrefs are illustrative; nothing here fetches them.
"""

from __future__ import annotations

import argparse
import binascii
import bisect
import heapq
import math
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson

JSON = dict[str, Any]

_DAY = 86400.0
_R_EARTH = 6371.0088  # km
_TWO_PI = 2.0 * math.pi
_DEG = 180.0 / math.pi

# ---------------------------------------------------------------------------------------------------- time


def _epoch(text: str) -> float:
    """Seconds since 1970 of an ISO date or datetime; naive values are UTC."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


_DAYS: dict[int, tuple[str, str]] = {}  # day number -> ("2021-08-09", "20210809"): formatting is hot


def _day(s: int) -> tuple[str, str]:
    d = s // 86400
    v = _DAYS.get(d)
    if v is None:
        g = time.gmtime(d * 86400)
        v = (f"{g.tm_year:04d}-{g.tm_mon:02d}-{g.tm_mday:02d}", f"{g.tm_year:04d}{g.tm_mon:02d}{g.tm_mday:02d}")
        _DAYS[d] = v
    return v


def _stamp(t: float) -> str:
    """Compact UTC time as in product names: 20210809T173953."""
    s = int(t)
    r = s % 86400
    return f"{_day(s)[1]}T{r // 3600:02d}{r // 60 % 60:02d}{r % 60:02d}"


def _iso(t: float) -> str:
    """RFC 3339 UTC time with microseconds; the same second as ``_stamp`` so names and properties agree."""
    s = int(t)
    r = s % 86400
    return f"{_day(s)[0]}T{r // 3600:02d}:{r // 60 % 60:02d}:{r % 60:02d}.{int((t - s) * 1e6):06d}Z"


def _ymd(t: float) -> tuple[str, str, str]:
    d = _day(int(t))[0]
    return d[:4], d[5:7], d[8:10]


# ---------------------------------------------------------------------------------------------------- orbits


class Orbit:
    """A circular sun-synchronous orbit with an exact repeat cycle: all that names and footprints need.

    Tracks are the relative orbits (ESA: consecutive orbits have consecutive numbers) or WRS-2 paths (consecutive
    orbits are 16 paths apart). ``lon_track1`` is the longitude of the ascending node of track 1.
    """

    def __init__(
        self,
        *,
        inclination: float,
        cycle_days: int,
        cycle_orbits: int,
        lon_track1: float,
        track_step: int = 1,
        track_spacing: int | None = None,
        start_u: float = 0.0,
    ) -> None:
        self.cycle_orbits = cycle_orbits
        self.period = cycle_days * _DAY / cycle_orbits
        self.sin_i = math.sin(math.radians(inclination))
        self.cos_i = math.cos(math.radians(inclination))
        self.max_lat = 180.0 - inclination
        self.lon_track1 = lon_track1
        self.track_step = track_step
        spacing = cycle_days if track_spacing is None else track_spacing
        self.node_step = spacing * 360.0 / cycle_orbits
        self.inv_spacing = pow(spacing, -1, cycle_orbits)
        self.inv_step = pow(track_step, -1, cycle_orbits)
        # S5P numbers its orbits from spacecraft midnight, not from the ascending node.
        self.start_offset = start_u / 360.0 * self.period

    def node_lon(self, track: int) -> float:
        return self.lon_track1 - (track - 1) * self.node_step

    def track_below(self, node_lon: float) -> int:
        """The track whose ascending node is nearest to ``node_lon``."""
        n = self.cycle_orbits
        m = round((self.lon_track1 - node_lon) * n / 360.0) % n
        return m * self.inv_spacing % n + 1


class Platform:
    """One satellite: its orbit, flying dates and a reference orbit (number, ascending-node time, track)."""

    def __init__(
        self,
        *,
        code: str,
        designator: str,
        orbit: Orbit,
        first: str,
        last: str | None,
        n_ref: int,
        anx_ref: str,
        track_ref: int,
        cycle_offset: int = 0,
        datatakes: Sequence[tuple[int, int]] = (),
    ) -> None:
        self.code = code
        self.designator = designator
        self.orbit = orbit
        self.first = _epoch(first)
        self.last = _epoch(last) + _DAY if last else math.inf
        self.n_ref = n_ref
        self.anx_ref = _epoch(anx_ref)
        self.track_ref = track_ref
        self.cycle_offset = cycle_offset
        self.datatakes = tuple(datatakes)

    def anx(self, n: int) -> float:
        return self.anx_ref + (n - self.n_ref) * self.orbit.period

    def orbit_at(self, t: float) -> int:
        o = self.orbit
        return self.n_ref + math.floor((t - self.anx_ref - o.start_offset) / o.period)

    def track(self, n: int) -> int:
        o = self.orbit
        return (self.track_ref - 1 + o.track_step * (n - self.n_ref)) % o.cycle_orbits + 1

    def cycle(self, n: int) -> int:
        return (n + self.cycle_offset) // self.orbit.cycle_orbits + 1

    def orbit_near(self, track: int, t: float) -> int:
        """The orbit flying ``track`` whose ascending node is nearest to time ``t``."""
        o = self.orbit
        n0 = self.n_ref + (track - self.track_ref) * o.inv_step % o.cycle_orbits
        k = round((t - self.anx(n0)) / (o.cycle_orbits * o.period))
        return n0 + k * o.cycle_orbits

    def flies(self, t: float) -> bool:
        return self.first <= t < self.last

    def point(self, n: int, tau: float, cross: float) -> tuple[float, float]:
        """(lon, lat) seen ``tau`` s after the ascending node of orbit ``n``, ``cross`` km right of the track."""
        o = self.orbit
        u = _TWO_PI * tau / o.period
        d = cross / _R_EARTH
        cd = math.cos(d)
        sd = math.sin(d)
        py = cd * math.sin(u)
        y = py * o.cos_i + sd * o.sin_i
        z = py * o.sin_i - sd * o.cos_i
        lon = o.node_lon(self.track(n)) + math.atan2(y, cd * math.cos(u)) * _DEG - 360.0 * tau / _DAY
        return (lon + 180.0) % 360.0 - 180.0, math.asin(z) * _DEG

    def datatake_id(self, n: int) -> int:
        """Mission datatake counter (S1), interpolated between real (orbit, datatake) pairs."""
        pts = self.datatakes
        i = max(1, min(len(pts) - 1, bisect.bisect_left(pts, (n, 0))))
        (n0, d0), (n1, d1) = pts[i - 1], pts[i]
        return int(d0 + (d1 - d0) * (n - n0) / (n1 - n0))


# ESA numbers tracks so that track 1 crosses the equator northwards near Greenwich; WRS-2 path 1 crosses it
# southwards at 64.6 W; S5P has no tracks (its node longitude is that of orbit n_ref).
_S1 = Orbit(inclination=98.18, cycle_days=12, cycle_orbits=175, lon_track1=0.0)
_S2 = Orbit(inclination=98.62, cycle_days=10, cycle_orbits=143, lon_track1=0.0)
_S3 = Orbit(inclination=98.65, cycle_days=27, cycle_orbits=385, lon_track1=0.0)
_S5P = Orbit(inclination=98.74, cycle_days=16, cycle_orbits=227, lon_track1=169.72, start_u=-144.0)
_WRS2 = Orbit(inclination=98.2, cycle_days=16, cycle_orbits=233, lon_track1=127.78, track_step=16, track_spacing=1)

# Reference orbits come from real products (manifest.safe ascending-node times, granule ids, frame numbers).
PLATFORMS: dict[str, Platform] = {
    p.code: p
    for p in (
        Platform(
            code="S1A",
            designator="2014-016A",
            orbit=_S1,
            first="2014-10-03",
            last=None,
            n_ref=39156,
            anx_ref="2021-08-09T17:27:46.469908",
            track_ref=59,
            datatakes=(
                (1, 10),
                (2658, 0x002F54),
                (9109, 0x00D17D),
                (14636, 0x017CCA),
                (30643, 0x0382F7),
                (39156, 0x049F13),
                (46117, 0x058549),
                (53498, 0x067DF2),
                (60328, 0x077F7E),
                (90000, 0x0B1000),
            ),
        ),
        Platform(
            code="S1B",
            designator="2016-025A",
            orbit=_S1,
            first="2016-09-26",
            last="2021-12-23",
            n_ref=3050,
            anx_ref="2016-11-21T00:59:36",
            track_ref=49,
            datatakes=((1, 10), (3050, 0x0052FC), (40000, 0x0052FC + 7 * 36950)),
        ),
        Platform(
            code="S1C",
            designator="2024-235A",
            orbit=_S1,
            first="2024-12-07",  # launched 2024-12-05 21:20 UTC; orbit 1 from 2024-12-06
            last=None,
            n_ref=638,
            anx_ref="2025-01-18T17:01:49.302142",
            track_ref=15,
            datatakes=((1, 16), (638, 0x000538), (40000, 0x000538 + 7 * 39362)),
        ),
        Platform(
            code="S2A",
            designator="2015-028A",
            orbit=_S2,
            first="2015-06-27",
            last=None,
            n_ref=46141,
            anx_ref="2024-04-22T17:14:04.29",
            track_ref=98,
        ),
        Platform(
            code="S2B",
            designator="2017-013A",
            orbit=_S2,
            first="2017-03-08",  # launched 2017-03-07 01:49 UTC
            last=None,
            n_ref=37161,
            anx_ref="2024-04-17T17:14:02.38",
            track_ref=98,
        ),
        Platform(
            code="S2C",
            designator="2024-157A",
            orbit=_S2,
            first="2024-09-06",  # launched 2024-09-05 01:50 UTC: orbit 1
            last=None,
            n_ref=1,
            anx_ref="2024-09-05T03:01:52",
            track_ref=18,
        ),
        Platform(
            code="S3A",
            designator="2016-011A",
            orbit=_S3,
            first="2016-04-20",
            last=None,
            n_ref=29567,
            anx_ref="2021-10-21T06:26:27",
            track_ref=334,
            cycle_offset=26,
        ),
        Platform(
            code="S3B",
            designator="2018-039A",
            orbit=_S3,
            first="2018-11-20",
            last=None,
            n_ref=17454,
            anx_ref="2021-08-31T19:37:52",
            track_ref=242,
            cycle_offset=3962,
        ),
        Platform(
            code="S5P",
            designator="2017-064A",
            orbit=_S5P,
            first="2018-04-30",
            last=None,
            n_ref=20496,
            anx_ref="2021-09-27T01:42:54.5",
            track_ref=1,
        ),
        # Landsat orbit numbers are never shown: n_ref is arbitrary, track_ref is the WRS-2 path.
        Platform(
            code="LE07",
            designator="1999-020A",
            orbit=_WRS2,
            first="2000-01-01",
            last="2022-04-06",
            n_ref=100000,
            anx_ref="2010-01-09T15:36:17.22",
            track_ref=21,
        ),
        Platform(
            code="LC08",
            designator="2013-008A",
            orbit=_WRS2,
            first="2013-04-11",
            last=None,
            n_ref=100000,
            anx_ref="2020-12-04T18:25:54.14",
            track_ref=47,
        ),
        Platform(
            code="LC09",
            designator="2021-088A",
            orbit=_WRS2,
            first="2021-10-31",
            last=None,
            n_ref=100000,
            anx_ref="2022-01-29T14:37:08.26",
            track_ref=10,
        ),
    )
}

MISSION_PLATFORMS = {
    "S1": ("S1A", "S1B", "S1C"),
    "S2": ("S2A", "S2B", "S2C"),
    "S3": ("S3A", "S3B"),
    "S5P": ("S5P",),
    "LANDSAT": ("LE07", "LC08", "LC09"),
}

# ---------------------------------------------------------------------------------------------------- geometry


@dataclass(frozen=True, slots=True)
class Footprint:
    """Polygon parts (one, or two when split at the antimeridian) and the RFC 7946 bbox."""

    parts: tuple[tuple[tuple[float, float], ...], ...]
    bbox: tuple[float, float, float, float]

    def geojson(self) -> JSON:
        if len(self.parts) == 1:
            return {"type": "Polygon", "coordinates": [[[x, y] for x, y in self.parts[0]]]}
        return {"type": "MultiPolygon", "coordinates": [[[[x, y] for x, y in ring]] for ring in self.parts]}

    def centre(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.bbox
        if x0 > x1:
            x1 += 360.0
        x = (x0 + x1) / 2.0
        return (x - 360.0 if x > 180.0 else x), (y0 + y1) / 2.0


def _clip(ring: list[tuple[float, float]], west: bool) -> list[tuple[float, float]]:
    """Sutherland-Hodgman clip of a ring (unwrapped longitudes) to lon <= 180 (west) or lon >= 180."""
    out: list[tuple[float, float]] = []
    a = ring[-1]
    a_in = (a[0] <= 180.0) if west else (a[0] >= 180.0)
    for b in ring:
        b_in = (b[0] <= 180.0) if west else (b[0] >= 180.0)
        if b_in != a_in:
            f = (180.0 - a[0]) / (b[0] - a[0])
            out.append((180.0, a[1] + f * (b[1] - a[1])))
        if b_in:
            out.append(b)
        a, a_in = b, b_in
    return out


def _close(ring: list[tuple[float, float]], shift: float = 0.0) -> tuple[tuple[float, float], ...]:
    pts = [(round(x + shift, 6), round(y, 6)) for x, y in ring]
    pts.append(pts[0])
    return tuple(pts)


def footprint(points: Sequence[tuple[float, float]]) -> Footprint:
    """A footprint from an open counter-clockwise ring of (lon, lat), split at the antimeridian if it crosses it."""
    ring: list[tuple[float, float]] = []
    prev = points[0][0]
    for lon, lat in points:
        while lon - prev > 180.0:
            lon -= 360.0
        while lon - prev < -180.0:
            lon += 360.0
        ring.append((lon, lat))
        prev = lon
    west = min(p[0] for p in ring)
    shift = -360.0 * math.floor((west + 180.0) / 360.0)
    if shift:
        ring = [(x + shift, y) for x, y in ring]
    east = max(p[0] for p in ring)
    south = round(min(p[1] for p in ring), 6)
    north = round(max(p[1] for p in ring), 6)
    if east <= 180.0:
        return Footprint((_close(ring),), (round(west + shift, 6), south, round(east, 6), north))
    left, right = _clip(ring, True), _clip(ring, False)
    return Footprint(
        (_close(left), _close(right, -360.0)),
        (round(min(p[0] for p in left), 6), south, round(max(p[0] for p in right) - 360.0, 6), north),
    )


def _swath(pl: Platform, n: int, tau0: float, tau1: float, left: float, right: float, steps: int) -> Footprint:
    """The footprint of a swath from ``left`` to ``right`` km across the track, between two times of an orbit.

    Wide swaths get a point on the track at each end too, so that the end edges bend as they do on the ground.
    """
    ts = [tau0 + (tau1 - tau0) * k / steps for k in range(steps + 1)]
    pts = [pl.point(n, t, right) for t in ts]
    wide = right - left > 1000.0
    if wide:
        pts.append(pl.point(n, tau1, (left + right) / 2.0))
    pts += [pl.point(n, t, left) for t in reversed(ts)]
    if wide:
        pts.append(pl.point(n, tau0, (left + right) / 2.0))
    return footprint(pts)


# --- UTM / MGRS (Krüger series, WGS84): S2 tiles and Landsat projections

_UTM_N = (1 / 298.257223563) / (2 - 1 / 298.257223563)
_UTM_A = 6378137.0 / (1 + _UTM_N) * (1 + _UTM_N**2 / 4 + _UTM_N**4 / 64)
_UTM_ALPHA = (
    _UTM_N / 2 - 2 * _UTM_N**2 / 3 + 5 * _UTM_N**3 / 16,
    13 * _UTM_N**2 / 48 - 3 * _UTM_N**3 / 5,
    61 * _UTM_N**3 / 240,
)
_UTM_BETA = (
    _UTM_N / 2 - 2 * _UTM_N**2 / 3 + 37 * _UTM_N**3 / 96,
    _UTM_N**2 / 48 + _UTM_N**3 / 15,
    17 * _UTM_N**3 / 480,
)
_UTM_DELTA = (
    2 * _UTM_N - 2 * _UTM_N**2 / 3 - 2 * _UTM_N**3,
    7 * _UTM_N**2 / 3 - 8 * _UTM_N**3 / 5,
    56 * _UTM_N**3 / 15,
)
_UTM_E = 2 * math.sqrt(_UTM_N) / (1 + _UTM_N)
_K0 = 0.9996
_BANDS = "CDEFGHJKLMNPQRSTUVWX"
_COLS = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")
_ROWS = "ABCDEFGHJKLMNPQRSTUV"


def utm_zone(lat: float, lon: float) -> int:
    """UTM zone of a point, with the Norway and Svalbard exceptions that MGRS (and so S2 tiles) follow."""
    zone = int((lon + 180.0) // 6.0) % 60 + 1
    if 56.0 <= lat < 64.0 and 3.0 <= lon < 12.0:
        return 32
    if 72.0 <= lat < 84.0 and 0.0 <= lon < 42.0:
        return 31 if lon < 9.0 else 33 if lon < 21.0 else 35 if lon < 33.0 else 37
    return zone


def to_utm(lat: float, lon: float, zone: int) -> tuple[float, float]:
    """(easting, northing) in ``zone``; northing has the 10,000 km false northing south of the equator."""
    phi = math.radians(lat)
    dl = math.radians(lon - (zone * 6 - 183))
    s = math.sin(phi)
    t = math.sinh(math.atanh(s) - _UTM_E * math.atanh(_UTM_E * s))
    xi = math.atan2(t, math.cos(dl))
    eta = math.atanh(math.sin(dl) / math.sqrt(1 + t * t))
    a1, a2, a3 = _UTM_ALPHA
    x = (
        eta
        + a1 * math.cos(2 * xi) * math.sinh(2 * eta)
        + a2 * math.cos(4 * xi) * math.sinh(4 * eta)
        + a3 * math.cos(6 * xi) * math.sinh(6 * eta)
    )
    y = (
        xi
        + a1 * math.sin(2 * xi) * math.cosh(2 * eta)
        + a2 * math.sin(4 * xi) * math.cosh(4 * eta)
        + a3 * math.sin(6 * xi) * math.cosh(6 * eta)
    )
    return 500000.0 + _K0 * _UTM_A * x, _K0 * _UTM_A * y + (10_000_000.0 if lat < 0 else 0.0)


def from_utm(easting: float, northing: float, zone: int, south: bool) -> tuple[float, float]:
    """(lon, lat) of a UTM position; longitudes stay continuous past the zone edge (no wrap at 180)."""
    xi = (northing - (10_000_000.0 if south else 0.0)) / (_K0 * _UTM_A)
    eta = (easting - 500000.0) / (_K0 * _UTM_A)
    b1, b2, b3 = _UTM_BETA
    xp = (
        xi
        - b1 * math.sin(2 * xi) * math.cosh(2 * eta)
        - b2 * math.sin(4 * xi) * math.cosh(4 * eta)
        - b3 * math.sin(6 * xi) * math.cosh(6 * eta)
    )
    ep = (
        eta
        - b1 * math.cos(2 * xi) * math.sinh(2 * eta)
        - b2 * math.cos(4 * xi) * math.sinh(4 * eta)
        - b3 * math.cos(6 * xi) * math.sinh(6 * eta)
    )
    chi = math.asin(math.sin(xp) / math.cosh(ep))
    d1, d2, d3 = _UTM_DELTA
    phi = chi + d1 * math.sin(2 * chi) + d2 * math.sin(4 * chi) + d3 * math.sin(6 * chi)
    return (zone * 6 - 183) + math.degrees(math.atan2(math.sinh(ep), math.cos(xp))), math.degrees(phi)


@dataclass(frozen=True, slots=True)
class Tile:
    """A Sentinel-2 tile: a 109.8 km square of the MGRS grid."""

    name: str  # 31TCJ
    zone: int
    epsg: int
    ulx: float
    uly: float
    footprint: Footprint
    lon: float
    lat: float
    land: bool  # its centre is in one of the land boxes that S2 images


_TILES: dict[tuple[int, int, int, int], Tile] = {}


def mgrs_tile(lat: float, lon: float) -> Tile:
    """The S2 tile whose 100 km MGRS square holds the point (tiles overlap their neighbours by 9.8 km)."""
    zone = utm_zone(lat, lon)
    e, n = to_utm(lat, lon, zone)
    col = int(e // 100000)
    row = int(n // 100000)
    band = min(19, max(0, int((lat + 80.0) // 8.0)))
    key = (zone, band, col, row)
    tile = _TILES.get(key)
    if tile is None:
        if len(_TILES) > 200_000:  # bounded cache
            _TILES.clear()
        name = (
            f"{zone:02d}{_BANDS[band]}{_COLS[(zone - 1) % 3][col - 1]}{_ROWS[(row + (5 if zone % 2 == 0 else 0)) % 20]}"
        )
        # Real tile origins sit a few tens of metres off the 100 km grid, in a repeating pattern.
        ulx = col * 100000.0 + (-40.0, -20.0, 0.0)[(col - 1) % 3]
        uly = (row + 1) * 100000.0 + (0.0, 20.0, 40.0)[(row + 1) % 3]
        south = lat < 0
        corners = [(ulx, uly), (ulx, uly - 109800.0), (ulx + 109800.0, uly - 109800.0), (ulx + 109800.0, uly)]
        ring = [from_utm(x, y, zone, south) for x, y in corners]
        clon, clat = from_utm(ulx + 54900.0, uly - 54900.0, zone, south)
        clon = (clon + 180.0) % 360.0 - 180.0
        epsg = (32700 if south else 32600) + zone
        tile = Tile(name, zone, epsg, ulx, uly, footprint(ring), clon, clat, _LAND.holds(clon, clat))
        _TILES[key] = tile
    return tile


# --- where land-imaging missions point: coarse boxes (west, south, east, north, weight); east > 180 crosses it

LAND: tuple[tuple[float, float, float, float, float], ...] = (
    (-10.0, 36.0, 30.0, 60.0, 9.0),  # Europe
    (4.0, 58.0, 31.0, 71.0, 1.5),  # Fennoscandia
    (30.0, 44.0, 60.0, 62.0, 2.5),  # European Russia, Caucasus
    (-17.0, 5.0, 35.0, 32.0, 3.0),  # Sahara, Sahel
    (10.0, -34.0, 41.0, 5.0, 2.5),  # Central and southern Africa
    (35.0, 13.0, 60.0, 38.0, 1.5),  # Middle East
    (68.0, 8.0, 90.0, 32.0, 1.5),  # Indian subcontinent
    (75.0, 22.0, 122.0, 45.0, 2.0),  # China, Central Asia
    (95.0, -9.0, 141.0, 20.0, 1.0),  # South-East Asia
    (60.0, 50.0, 140.0, 72.0, 1.5),  # Siberia
    (160.0, 60.0, 191.0, 70.0, 0.5),  # Chukotka (antimeridian)
    (172.0, 51.0, 195.0, 55.0, 0.2),  # Aleutians (antimeridian)
    (176.0, -20.0, 182.0, -15.0, 0.2),  # Fiji (antimeridian)
    (166.0, -47.0, 179.0, -34.0, 0.3),  # New Zealand
    (114.0, -38.0, 153.0, -12.0, 1.5),  # Australia
    (-125.0, 30.0, -70.0, 50.0, 3.5),  # United States
    (-135.0, 50.0, -60.0, 68.0, 1.5),  # Canada
    (-168.0, 55.0, -141.0, 71.0, 0.5),  # Alaska
    (-105.0, 8.0, -78.0, 25.0, 0.8),  # Mexico, Central America
    (-80.0, -40.0, -35.0, 10.0, 2.5),  # South America
    (-75.0, -55.0, -63.0, -40.0, 0.3),  # Patagonia
    (-55.0, 60.0, -20.0, 83.0, 0.4),  # Greenland
    (10.0, 76.5, 32.0, 80.5, 0.15),  # Svalbard
    (-180.0, -80.0, 180.0, -66.0, 0.3),  # Antarctica
)
# Sentinel-1 EW mode: sea ice and polar seas.
POLAR: tuple[tuple[float, float, float, float, float], ...] = (
    (-180.0, 70.0, 180.0, 86.0, 3.0),  # Arctic Ocean
    (-60.0, 60.0, -15.0, 80.0, 1.0),  # Greenland, Denmark Strait
    (10.0, 70.0, 60.0, 82.0, 1.0),  # Barents Sea, Svalbard
    (-180.0, -78.0, 180.0, -60.0, 1.5),  # Southern Ocean
)


class _Regions:
    def __init__(self, boxes: Sequence[tuple[float, float, float, float, float]]) -> None:
        self.boxes = tuple(boxes)
        acc = 0.0
        self.cum: list[float] = []
        for box in boxes:
            acc += box[4]
            self.cum.append(acc)

    def sample(self, rng: random.Random) -> tuple[float, float]:
        w, s, e, n, _ = self.boxes[bisect.bisect_right(self.cum, rng.random() * self.cum[-1])]
        lon = w + (e - w) * rng.random()
        # Uniform on the sphere within the box, so polar boxes are not over-sampled.
        z = math.sin(math.radians(s)) + (math.sin(math.radians(n)) - math.sin(math.radians(s))) * rng.random()
        return (lon + 180.0) % 360.0 - 180.0, math.degrees(math.asin(z))

    def holds(self, lon: float, lat: float) -> bool:
        return any(s <= lat <= n and (w <= lon <= e or w <= lon + 360.0 <= e) for w, s, e, n, _ in self.boxes)


_LAND = _Regions(LAND)
_POLAR = _Regions(POLAR)


def _sun(lon: float, lat: float, t: float) -> tuple[float, float]:
    """(elevation, azimuth) of the sun in degrees, accurate to a degree or two."""
    doy = (t / _DAY) % 365.2422
    decl = math.radians(-23.44) * math.cos(_TWO_PI * (doy + 10.0 - 355.0) / 365.2422)
    hour = math.radians(((t % _DAY) / 3600.0 + lon / 15.0 - 12.0) * 15.0)
    phi = math.radians(lat)
    sin_el = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(hour)
    el = math.asin(max(-1.0, min(1.0, sin_el)))
    az = math.atan2(-math.sin(hour), math.tan(decl) * math.cos(phi) - math.sin(phi) * math.cos(hour))
    return math.degrees(el), math.degrees(az) % 360.0


# ---------------------------------------------------------------------------------------------------- federation


@dataclass(frozen=True)
class Offering:
    """One collection a provider serves: which product family, under which collection id and id style."""

    family: str
    collection: str
    style: str  # esa | esa-nocrc | pc | earth-search | stactools | usgs
    weight: float = 1.0  # relative share of the family's products this provider holds first-hand


@dataclass(frozen=True)
class Provider:
    name: str
    api_root: str
    asset_root: str
    stac_version: str
    offerings: tuple[Offering, ...]

    def offering(self, family: str) -> Offering | None:
        for o in self.offerings:
            if o.family == family:
                return o
        return None


@dataclass(frozen=True)
class Family:
    """A product family: the same products whoever holds them (collection ids differ per provider)."""

    name: str
    mission: str  # S1 | S2 | S3 | S5P | LANDSAT
    share: float  # of the federation's products
    styles: tuple[str, ...]


FAMILIES: tuple[Family, ...] = (
    Family("sentinel-1-grd", "S1", 0.22, ("esa", "esa-nocrc")),
    Family("sentinel-1-slc", "S1", 0.06, ("esa", "esa-nocrc")),
    Family("sentinel-2-l1c", "S2", 0.19, ("esa", "pc", "earth-search")),
    Family("sentinel-2-l2a", "S2", 0.25, ("esa", "pc", "earth-search")),
    Family("sentinel-3-olci", "S3", 0.07, ("esa", "stactools")),
    Family("sentinel-3-slstr", "S3", 0.04, ("esa", "stactools")),
    Family("sentinel-3-sral", "S3", 0.015, ("esa", "stactools")),
    Family("sentinel-3-synergy", "S3", 0.015, ("esa", "stactools")),
    Family("sentinel-5p-l1b", "S5P", 0.02, ("esa", "stactools")),
    Family("sentinel-5p-l2", "S5P", 0.05, ("esa", "stactools")),
    Family("landsat-c2-l1", "LANDSAT", 0.025, ("usgs", "pc")),
    Family("landsat-c2-l2", "LANDSAT", 0.035, ("usgs", "pc")),
)
FAMILY = {f.name: f for f in FAMILIES}

# The sample federation. Add a provider or an offering here; styles must be among the family's styles.
FEDERATION: tuple[Provider, ...] = (
    Provider(
        "EODC",
        "https://stac.eodc.eu/api/v1",
        "https://data.eodc.eu/collections",
        "1.0.0",
        (
            Offering("sentinel-1-grd", "SENTINEL1_GRD", "esa", 3.0),
            Offering("sentinel-1-slc", "SENTINEL1_SLC", "esa", 3.0),
            Offering("sentinel-2-l1c", "SENTINEL2_L1C", "esa", 2.0),
            Offering("sentinel-2-l2a", "SENTINEL2_L2A", "esa", 2.0),
        ),
    ),
    Provider(
        "GRNET",
        "https://stac.grnet.example/v1",
        "https://s3.grnet.example",
        "1.0.0",
        (
            Offering("sentinel-1-grd", "sentinel-1-grd", "esa-nocrc", 1.0),
            Offering("sentinel-2-l1c", "sentinel-2-l1c", "earth-search", 1.0),
            Offering("sentinel-2-l2a", "sentinel-2-l2a", "earth-search", 2.0),
            Offering("sentinel-5p-l2", "sentinel-5p-l2", "stactools", 1.0),
        ),
    ),
    Provider(
        "CREODIAS",
        "https://datahub.creodias.example/stac",
        "s3://eodata",
        "1.1.0",
        (
            Offering("sentinel-1-grd", "sentinel-1-grd", "esa-nocrc", 3.0),
            Offering("sentinel-1-slc", "sentinel-1-slc", "esa-nocrc", 1.0),
            Offering("sentinel-2-l1c", "sentinel-2-l1c", "esa", 3.0),
            Offering("sentinel-2-l2a", "sentinel-2-l2a", "esa", 3.0),
            Offering("sentinel-3-olci", "sentinel-3-olci", "esa", 2.0),
            Offering("sentinel-3-slstr", "sentinel-3-slstr", "esa", 2.0),
            Offering("sentinel-3-sral", "sentinel-3-sral", "esa", 2.0),
            Offering("sentinel-3-synergy", "sentinel-3-synergy", "esa", 2.0),
            Offering("sentinel-5p-l1b", "sentinel-5p-l1b", "esa", 2.0),
            Offering("sentinel-5p-l2", "sentinel-5p-l2", "esa", 2.0),
            Offering("landsat-c2-l1", "landsat-c2-l1", "usgs", 2.0),
            Offering("landsat-c2-l2", "landsat-c2-l2", "usgs", 2.0),
        ),
    ),
    Provider(
        "CESNET",
        "https://stac.cesnet.example",
        "https://dhr1.cesnet.example/eodata",
        "1.0.0",
        (
            Offering("sentinel-1-grd", "sentinel1-grd", "esa", 2.0),
            Offering("sentinel-1-slc", "sentinel1-slc", "esa", 1.0),
            Offering("sentinel-2-l1c", "sentinel2-l1c", "esa", 1.0),
            Offering("sentinel-2-l2a", "sentinel2-l2a", "esa", 1.0),
            Offering("sentinel-3-olci", "sentinel3-olci", "esa", 1.0),
            Offering("sentinel-3-slstr", "sentinel3-slstr", "esa", 1.0),
            Offering("sentinel-5p-l1b", "sentinel5p-l1b", "esa", 1.0),
            Offering("sentinel-5p-l2", "sentinel5p-l2", "esa", 1.0),
        ),
    ),
    Provider(
        "INCD",
        "https://stac.incd.example/api",
        "https://s3.incd.example",
        "1.0.0",
        (
            Offering("sentinel-2-l2a", "sentinel-2-l2a", "pc", 1.0),
            Offering("sentinel-3-olci", "sentinel-3-olci", "stactools", 1.0),
            Offering("sentinel-3-slstr", "sentinel-3-slstr", "stactools", 1.0),
            Offering("sentinel-3-sral", "sentinel-3-sral", "stactools", 1.0),
            Offering("sentinel-3-synergy", "sentinel-3-synergy", "stactools", 1.0),
            Offering("landsat-c2-l1", "landsat-c2-l1", "pc", 2.0),
            Offering("landsat-c2-l2", "landsat-c2-l2", "pc", 2.0),
        ),
    ),
)


def _check_federation() -> None:
    for p in FEDERATION:
        for o in p.offerings:
            fam = FAMILY.get(o.family)
            if fam is None or o.style not in fam.styles:
                raise ValueError(f"{p.name}: offering {o.family}/{o.style} is not a known family style")


_check_federation()

# ---------------------------------------------------------------------------------------------------- STAC bits

_EXT = {
    "eo": "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "sat": "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
    "sar": "https://stac-extensions.github.io/sar/v1.0.0/schema.json",
    "proj": "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "view": "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    "processing": "https://stac-extensions.github.io/processing/v1.1.0/schema.json",
    "s2": "https://stac-extensions.github.io/sentinel-2/v1.0.0/schema.json",
    "grid": "https://stac-extensions.github.io/grid/v1.1.0/schema.json",
    "mgrs": "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "file": "https://stac-extensions.github.io/file/v2.1.0/schema.json",
    "landsat": "https://stac-extensions.github.io/landsat/v2.0.0/schema.json",
    "storage": "https://stac-extensions.github.io/storage/v1.0.0/schema.json",
}
# Field prefixes whose extension schema an item must list when it uses them (a test checks this).
EXTENSION_PREFIXES = dict(_EXT)

_COPERNICUS_LICENSE = "https://sentinel.esa.int/documents/247904/690755/Sentinel_Data_Legal_Notice"
_USGS_LICENSE = "https://www.usgs.gov/core-science-systems/hdds/data-policy"
_COG = "image/tiff; application=geotiff; profile=cloud-optimized"
_NETCDF = "application/x-netcdf"


def _links(p: Provider, collection: str, item_id: str, license_href: str) -> list[JSON]:
    coll = f"{p.api_root}/collections/{collection}"
    return [
        {"rel": "self", "type": "application/geo+json", "href": f"{coll}/items/{item_id}"},
        {"rel": "parent", "type": "application/json", "href": coll},
        {"rel": "collection", "type": "application/json", "href": coll},
        {"rel": "root", "type": "application/json", "href": f"{p.api_root}/"},
        {"rel": "license", "href": license_href, "title": "License"},
    ]


def _item(
    p: Provider,
    collection: str,
    item_id: str,
    exts: Sequence[str],
    fp: Footprint,
    props: JSON,
    assets: JSON,
    license_href: str = _COPERNICUS_LICENSE,
) -> JSON:
    return {
        "type": "Feature",
        "stac_version": p.stac_version,
        "stac_extensions": [_EXT[e] for e in exts],
        "id": item_id,
        "collection": collection,
        "geometry": fp.geojson(),
        "bbox": list(fp.bbox),
        "properties": props,
        "links": _links(p, collection, item_id, license_href),
        "assets": assets,
    }


class _Rng(Protocol):
    def random(self) -> float: ...


class _Draw:
    """Cheap per-product randomness (64-bit LCG): random.Random() costs microseconds to seed, and details
    drawn from the product's own seed stay the same whichever provider renders it, whenever."""

    __slots__ = ("s",)

    def __init__(self, seed: int) -> None:
        self.s = seed * 2862933555777941757 + 3037000493

    def bits(self) -> int:
        self.s = (self.s * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        return self.s

    def random(self) -> float:
        return (self.bits() >> 11) * (1.0 / 9007199254740992.0)

    def randint(self, a: int, b: int) -> int:
        return a + int(self.random() * (b - a + 1))


def _checksum(rng: _Draw) -> str:
    """A multihash sha2-256 checksum, as the file extension wants."""
    return f"1220{rng.bits():016x}{rng.bits():016x}{rng.bits():016x}{rng.bits():016x}"


def _pick(rng: _Rng, table: Sequence[tuple[float, str]]) -> str:
    x = rng.random() * sum(w for w, _ in table)
    for w, value in table:
        x -= w
        if x < 0:
            return value
    return table[-1][1]


def _era(t: float, table: Sequence[tuple[float, str]]) -> str:
    """The value in force at time t, from (first second, value) rows in time order."""
    return table[max(0, bisect.bisect_right(table, (t, "\uffff")) - 1)][1]


def _eras(rows: Sequence[tuple[str, str]]) -> tuple[tuple[float, str], ...]:
    return tuple((_epoch(day), value) for day, value in rows)


def _cloud(rng: _Rng) -> float:
    """Cloud cover with the real bimodal shape (many clear scenes, many overcast ones)."""
    x = rng.random()
    if x < 0.35:
        return round(rng.random() * 5.0, 6)
    if x < 0.65:
        return round(90.0 + rng.random() * 10.0, 6)
    return round(rng.random() * 100.0, 6)


# ---------------------------------------------------------------------------------------------------- products


Geo = tuple[int, float, float, float, float, int]  # swath arguments: orbit, tau0, tau1, left, right, steps


@dataclass(slots=True)
class Product:
    """One product, made once and rendered by each provider that holds it.

    Footprints and details nobody may render are computed on first use: a provider's view skips most products.
    """

    uid: int
    family: str
    platform: Platform
    start: float
    end: float
    n: int  # absolute orbit
    ascending: bool
    geo: Footprint | Geo
    name: str  # ESA / USGS name (no CRC, no extension)
    rng_seed: int  # per-product randomness, the same whichever provider renders it
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def fp(self) -> Footprint:
        geo = self.geo
        if isinstance(geo, Footprint):
            return geo
        fp = _swath(self.platform, *geo)
        self.geo = fp
        return fp


class _Gen:
    """Base of a family's product stream: time slots, orbits in use, ground-first aiming."""

    def __init__(self, family: Family, run: _Run, t0: float, t1: float, slots: int) -> None:
        self.family = family
        self.run = run
        self.rng = random.Random(f"{run.seed}/{family.name}/{slots}")
        self.t0, self.t1 = t0, t1
        self.slots = max(1, slots)
        self.platforms = [PLATFORMS[c] for c in MISSION_PLATFORMS[family.mission]]
        self.used: set[tuple[str, int, str]] = set()
        self.index = 0.0  # time slots used so far
        self.made = 0  # products made so far
        self.uid_base = FAMILIES.index(family) << 40
        # Groups (datatakes, orbits) must grow when the count outruns the orbits available in the range.
        orbits = sum(max(0.0, min(t1, p.last) - max(t0, p.first)) / p.orbit.period for p in self.platforms)
        self.min_group = max(1, math.ceil(1.3 * self.slots / max(orbits, 1.0)))

    def target(self, size: float) -> float:
        """Time of the next group: products are spread evenly over the range; a stream that outruns its
        estimate (replica draws vary) wraps around instead of spilling past the end."""
        f = ((self.index + size / 2.0) / self.slots) % 1.0
        return self.t0 + (self.t1 - self.t0) * f

    def platform_at(self, t: float) -> Platform | None:
        live = [p for p in self.platforms if p.flies(t)]
        return self.rng.choice(live) if live else None

    def claim(self, pl: Platform, n: int, tau0: float, tau1: float, lane: str = "") -> bool:
        """Take orbit n of pl for one group of products of a lane (product types whose names cannot clash),
        if it is free and the group fits in the time range: names never repeat."""
        key = (pl.code, n, lane)
        if key in self.used:
            return False
        a = pl.anx(n)
        if not (pl.flies(a + tau0) and self.t0 <= a + tau0 and a + tau1 < self.t1):
            return False
        self.used.add(key)
        return True

    def aim(self, pl: Platform, regions: _Regions, t: float, ascending: bool) -> tuple[int, float] | None:
        """An unused orbit of ``pl`` near time t whose nadir passes over a random point of ``regions``:
        the relative orbit follows from the point's longitude, so tracks, times and places agree."""
        o = pl.orbit
        rng = self.rng
        for _ in range(8):
            lon, lat = regions.sample(rng)
            lat = max(-o.max_lat + 0.5, min(o.max_lat - 0.5, lat))
            u = math.asin(math.sin(math.radians(lat)) / o.sin_i)
            if not ascending:
                u = math.pi - u
            u %= _TWO_PI
            tau = u / _TWO_PI * o.period
            node = lon - math.atan2(o.cos_i * math.sin(u), math.cos(u)) * _DEG + 360.0 * tau / _DAY
            n = pl.orbit_near(o.track_below(node), t - tau)
            for k in (0, 1, -1, 2, -2):
                m = n + k * o.cycle_orbits
                when = pl.anx(m) + tau
                if (pl.code, m, "") not in self.used and pl.flies(when) and self.t0 <= when < self.t1:
                    return m, tau
        return None

    def groups(self) -> Iterator[list[Product]]:
        misses = 0
        while True:
            group = self.group()
            if group:
                misses = 0
                self.index += len(group)
                yield group
            else:
                misses += 1
                self.index += 0.25  # move on in time
                if misses > 2000:
                    return  # the orbits of the time range are all taken: this family has no more products

    def group(self) -> list[Product]:
        raise NotImplementedError

    def product(
        self, pl: Platform, start: float, end: float, n: int, asc: bool, geo: Footprint | Geo, name: str, **extra: Any
    ) -> Product:
        self.made += 1
        return Product(
            self.uid_base + self.made,
            self.family.name,
            pl,
            start,
            end,
            n,
            asc,
            geo,
            name,
            self.rng.getrandbits(32),
            extra,
        )

    def render(self, p: Product, prov: Provider, off: Offering) -> JSON:
        raise NotImplementedError


# --- Sentinel-1

_IPF = _eras(
    (
        ("2014-01-01", "002.36"),
        ("2018-06-26", "002.90"),
        ("2019-06-25", "003.10"),
        ("2020-06-24", "003.31"),
        ("2021-11-23", "003.40"),
        ("2022-03-22", "003.52"),
        ("2023-03-28", "003.61"),
        ("2023-10-09", "003.71"),
        ("2024-05-06", "003.80"),
        ("2024-11-05", "003.90"),
    )
)
_SAR: dict[str, tuple[float, float, float, float, int, int, float]] = {
    # resolution range, azimuth; pixel spacing range, azimuth; looks range, azimuth; equivalent number of looks
    "IW_GRDH": (20.0, 22.0, 10.0, 10.0, 5, 1, 4.4),
    "EW_GRDM": (93.0, 87.0, 40.0, 40.0, 6, 2, 10.7),
    "EW_GRDH": (50.0, 50.0, 25.0, 25.0, 3, 1, 3.0),
    "IW_SLC_": (3.5, 22.6, 2.3, 14.1, 1, 1, 1.0),
}


class _S1Gen(_Gen):
    def group(self) -> list[Product]:
        rng = self.rng
        slc = self.family.name.endswith("slc")
        ew = not slc and rng.random() < 0.18
        slices = max(self.min_group, rng.randint(1, 6 if ew else 14))
        step, dur = (60.0, 64.0) if ew else (25.0, 27.0 if slc else 25.0)
        t = self.target(slices)
        pl = self.platform_at(t)
        if pl is None:
            return []
        aim = self.aim(pl, _POLAR if ew else _LAND, t, rng.random() < 0.5)
        if aim is None:
            return []
        n, tau = aim
        period = pl.orbit.period
        tau0 = max(1.0, tau - rng.random() * slices * step) + rng.random()
        tau0 = min(tau0, period - slices * step - dur - 1.0)
        if not self.claim(pl, n, tau0, tau0 + slices * step + dur):
            return []
        anx = pl.anx(n)
        track = pl.track(n)
        dtid = pl.datatake_id(n) + (1 if slc else 0)  # SLC and GRD datatakes never share an id
        mode = "EW" if ew else "IW"
        if ew:
            pol = _pick(rng, ((0.8, "DH"), (0.15, "SH"), (0.05, "DV")))
            ptype = "GRDM" if rng.random() < 0.9 else "GRDH"
        elif abs(pl.point(n, tau, 0.0)[1]) > 60.0:  # Greenland, Antarctica: HH
            pol = _pick(rng, ((0.2, "DV"), (0.75, "DH"), (0.05, "SH")))
            ptype = "SLC_" if slc else "GRDH"
        else:
            pol = _pick(rng, ((0.9, "DV"), (0.06, "SV"), (0.04, "DH")))
            ptype = "SLC_" if slc else "GRDH"
        co = pol[1] * 2
        pols = (co, pol[1] + ("V" if pol[1] == "H" else "H")) if pol[0] == "D" else (co,)
        near, far = (170.0, 570.0) if ew else (265.0, 515.0)
        first = rng.randint(1, 8)
        total = first + slices - 1 + rng.randint(0, 8)
        nrt = rng.random() < 0.6
        sar = _SAR[f"{mode}_{ptype}"[:7]]
        shared = {
            "mode": mode,
            "kind": "SLC" if slc else "GRD",
            "pols": pols,
            "sar": sar,
            "track": track,
            "anx": anx,
            "dtid": dtid,
            "first": first,
            "total": str(total),
            "nrt": nrt,
            "resolution": "full" if slc else "high" if ptype == "GRDH" else "medium",
        }
        out = []
        for k in range(slices):
            a = tau0 + k * step
            b = a + (dur if k < slices - 1 else dur * (0.4 + 0.6 * rng.random()))
            start, stop = anx + a, anx + b
            name = f"{pl.code}_{mode}_{ptype}_1S{pol}_{_stamp(start)}_{_stamp(stop)}_{n:06d}_{dtid & 0xFFFFFF:06X}"
            out.append(
                self.product(
                    pl,
                    start,
                    stop,
                    n,
                    math.cos(_TWO_PI * a / period) > 0,
                    (n, a, b, near, far, 1),
                    name,
                    k=k,
                    shared=shared,
                )
            )
        return out

    @staticmethod
    def details(p: Product) -> dict[str, Any]:
        """Per-slice details, made on first use."""
        x = p.extra
        if "crc" in x:
            return x
        x.update(x.pop("shared"))
        rng = _Draw(p.rng_seed)
        name, start, stop, n, dtid = p.name, p.start, p.end, p.n, x["dtid"]
        crc = f"{binascii.crc_hqx(name.encode(), 0xFFFF):04X}"
        processed = stop + (1.0 + 2.0 * rng.random() if x["nrt"] else 8.0 + 14.0 * rng.random()) * 3600.0
        created = processed + 1800.0 + 7200.0 * rng.random()
        y, m, d = _ymd(start)
        kind, mode = x["kind"], x["mode"]
        # Files inside the SAFE, the same at every provider: (key, path, title, data?)
        tail = f"{_stamp(start).lower()}-{_stamp(stop).lower()}-{n:06d}-{dtid & 0xFFFFFF:06x}"
        files: list[tuple[str, str, str, bool]] = [("safe-manifest", "/manifest.safe", "Manifest File", False)]
        code = p.platform.code.lower()
        for i, pol in enumerate(x["pols"]):
            for j, sw in enumerate(("iw1", "iw2", "iw3") if kind == "SLC" else (mode.lower(),)):
                key = f"{sw}-{pol.lower()}" if kind == "SLC" else pol.lower()
                stem = f"{code}-{sw}-{kind.lower()}-{pol.lower()}-{tail}-{i * 3 + j + 1:03d}"
                files.append((f"schema-product-{key}", f"/annotation/{stem}.xml", f"{pol} Product Schema", False))
                files.append(
                    (
                        f"schema-calibration-{key}",
                        f"/annotation/calibration/calibration-{stem}.xml",
                        f"{pol} Calibration Schema",
                        False,
                    )
                )
                files.append((key, f"/measurement/{stem}.tiff", f"{pol} Data", True))
        files.append(("thumbnail", "/preview/quick-look.png", "Preview Image", False))
        x.update(
            crc=crc,
            files=files,
            ipf=_era(start, _IPF),
            slice=str(x["first"] + x["k"]),
            timeliness="NRT-3h" if x["nrt"] else "Fast-24h",
            orbit_source="DOWNLINK" if x["nrt"] else "RESORB",
            times=(_iso((start + stop) / 2.0), _iso(start), _iso(stop), _iso(x["anx"]), _iso(processed), _iso(created)),
            safe=f"/Sentinel-1/SAR/{kind}/{y}/{m}/{d}/{name}_{crc}.SAFE",
        )
        return x

    def render(self, p: Product, prov: Provider, off: Offering) -> JSON:
        x = self.details(p)
        pl = p.platform
        esa = off.style == "esa"
        res = x["sar"]
        times = x["times"]
        slc = x["kind"] == "SLC"
        props: JSON = {
            "datetime": times[0],
            "start_datetime": times[1],
            "end_datetime": times[2],
            "platform": f"sentinel-{pl.code[1:].lower()}" if esa else f"SENTINEL-{pl.code[1:]}",
            "constellation": "sentinel-1" if esa else "Sentinel-1",
            "instruments": ["c-sar"],
            "sar:frequency_band": "C",
            "sar:center_frequency": 5.405,
            "sar:observation_direction": "right",
            "sar:instrument_mode": x["mode"],
            "sar:polarizations": list(x["pols"]),
            "sar:product_type": x["kind"],
            "sar:resolution_range": res[0],
            "sar:resolution_azimuth": res[1],
            "sar:pixel_spacing_range": res[2],
            "sar:pixel_spacing_azimuth": res[3],
            "sar:looks_range": res[4],
            "sar:looks_azimuth": res[5],
            "sat:platform_international_designator": pl.designator,
            "sat:orbit_state": "ascending" if p.ascending else "descending",
            "sat:absolute_orbit": p.n,
            "sat:relative_orbit": x["track"],
            "s1:datatake_id": str(x["dtid"]),
            "s1:instrument_configuration_ID": "7" if p.start > 1.5e9 else "3",
            "s1:product_timeliness": x["timeliness"],
            "s1:processing_level": "1",
            "s1:resolution": x["resolution"],
            "s1:orbit_source": x["orbit_source"],
            "s1:slice_number": x["slice"],
            "s1:total_slices": x["total"],
        }
        if not slc:
            props["sar:looks_equivalent_number"] = res[6]
        exts: tuple[str, ...] = ("sar", "sat")
        if esa:
            item_id = f"{p.name}_{x['crc']}"
            props["sat:anx_datetime"] = times[3]
            props["s1:product_identifier"] = item_id
            props["s1:processing_datetime"] = times[4]
            props["processing:level"] = "L1"
            props["processing:facility"] = "Copernicus S1 Core Ground Segment - DPA"
            props["processing:software"] = {"Sentinel-1 IPF": x["ipf"]}
            exts = ("sar", "sat", "processing")
        else:
            item_id = p.name
        props["created"] = times[5]
        props["updated"] = times[5]
        root = prov.asset_root + x["safe"]
        data_type = "image/tiff; application=geotiff" if esa or slc else _COG
        assets: JSON = {}
        for key, path, title, data in x["files"]:
            if data:
                assets[key] = {"href": root + path, "type": data_type, "title": title, "roles": ["data"]}
            elif key == "thumbnail":
                assets[key] = {"href": root + path, "type": "image/png", "title": title, "roles": ["thumbnail"]}
            else:
                assets[key] = {"href": root + path, "type": "application/xml", "title": title, "roles": ["metadata"]}
        return _item(prov, off.collection, item_id, exts, p.fp, props, assets)


# --- Sentinel-2

# (first day, L1C baseline, L2A baseline); L2A before 2017-10 exists only as reprocessed collection-1 products.
_S2_BASELINES = (
    ("2015-06-23", "02.00", ""),
    ("2015-11-10", "02.01", ""),
    ("2016-05-03", "02.02", ""),
    ("2016-06-15", "02.04", ""),
    ("2017-04-27", "02.05", ""),
    ("2017-10-23", "02.06", "02.06"),
    ("2018-05-23", "02.06", "02.07"),
    ("2018-11-06", "02.07", "02.10"),
    ("2019-05-06", "02.07", "02.12"),
    ("2019-07-08", "02.08", "02.13"),
    ("2020-01-28", "02.09", "02.14"),
    ("2021-03-30", "03.00", "03.00"),
    ("2021-06-30", "03.01", "03.01"),
    ("2022-01-25", "04.00", "04.00"),
    ("2023-06-06", "05.09", "05.09"),
    ("2023-12-13", "05.10", "05.10"),
    ("2024-07-23", "05.11", "05.11"),
)
_S2_BASELINE_DAYS = [(_epoch(d), a, b) for d, a, b in _S2_BASELINES]
_S2_BASELINE_STARTS = [d for d, _, _ in _S2_BASELINE_DAYS]
_S2_COLLECTION1 = _epoch("2022-01-01")  # older products may come reprocessed (collection 1, baseline 05.00)
_REPROCESSING = (_epoch("2022-11-01"), _epoch("2024-06-30"))

# name, common name (earth-search key), description, centre, fwhm, gsd
_S2_BANDS = (
    ("B01", "coastal", "coastal", "Coastal aerosol", 0.443, 0.027, 60),
    ("B02", "blue", "blue", "Blue", 0.49, 0.098, 10),
    ("B03", "green", "green", "Green", 0.56, 0.045, 10),
    ("B04", "red", "red", "Red", 0.665, 0.038, 10),
    ("B05", "rededge", "rededge1", "Vegetation red edge 1", 0.704, 0.019, 20),
    ("B06", "rededge", "rededge2", "Vegetation red edge 2", 0.74, 0.018, 20),
    ("B07", "rededge", "rededge3", "Vegetation red edge 3", 0.783, 0.028, 20),
    ("B08", "nir", "nir", "NIR", 0.842, 0.145, 10),
    ("B8A", "nir08", "nir08", "Vegetation red edge 4", 0.865, 0.033, 20),
    ("B09", "nir09", "nir09", "Water vapour", 0.945, 0.026, 60),
    ("B10", "cirrus", "cirrus", "SWIR - Cirrus", 1.375, 0.075, 60),
    ("B11", "swir16", "swir16", "SWIR (1.6)", 1.61, 0.143, 20),
    ("B12", "swir22", "swir22", "SWIR (2.2)", 2.19, 0.242, 20),
)
_S2_SURFACES = ("vegetation", "not_vegetated", "water", "dark_features", "cloud_shadow", "snow_ice")


class _S2Gen(_Gen):
    def __init__(self, family: Family, run: _Run, t0: float, t1: float, slots: int) -> None:
        super().__init__(family, run, t0, t1, slots)
        self.level = "L2A" if family.name.endswith("l2a") else "L1C"
        self.seq: dict[tuple[str, str, int], int] = {}  # earth-search sequence numbers, pruned as time moves

    def group(self) -> list[Product]:
        rng = self.rng
        steps = rng.randint(2, 24)
        t = self.target(steps * 2.0)
        pl = self.platform_at(t)
        if pl is None:
            return []
        aim = self.aim(pl, _LAND, t, False)
        if aim is None:
            return []
        n, tau = aim
        o = pl.orbit
        anx = pl.anx(n)
        # Daylight, descending: between 83 N (u = 95 deg) and 81 S (u = 265 deg).
        lo, hi = 95.0 / 360.0 * o.period, 265.0 / 360.0 * o.period
        dstep = 100.0 / _R_EARTH / _TWO_PI * o.period  # 100 km along track
        tiles: dict[str, tuple[Tile, float]] = {}
        k0 = -rng.randint(0, steps)
        k = k0
        while len(tiles) < self.min_group or k - k0 < steps:
            tk = tau + k * dstep
            if tk < lo or tk > hi or k - k0 > 400:
                break
            for cross in (-95.0, 0.0, 95.0):
                lon, lat = pl.point(n, tk, cross)
                if -80.0 <= lat <= 84.0:
                    tile = mgrs_tile(lat, lon)
                    if tile.land and tile.name not in tiles:
                        tiles[tile.name] = (tile, tk)
            k += 1
        tau0 = max(lo, tau + k0 * dstep - 20.0 * rng.random())
        if not tiles or not self.claim(pl, n, tau0, tau + k * dstep):
            return []
        level = self.level
        dt_start = anx + tau0
        i = bisect.bisect_right(_S2_BASELINE_STARTS, dt_start) - 1
        row = _S2_BASELINE_DAYS[max(0, i)]
        baseline = row[2] if level == "L2A" else row[1]
        if dt_start < _S2_COLLECTION1 and (not baseline or rng.random() < 0.35):
            # Reprocessed into collection 1 (baseline 05.00) in 2022-2024.
            baseline = "05.00"
            lo_gen = max(dt_start + 365 * _DAY, _REPROCESSING[0])
            gen = lo_gen + rng.random() * max(0.0, _REPROCESSING[1] - lo_gen)
            centre = "S2RP"
        else:
            gen = dt_start + (1.0 if level == "L1C" else 2.0) * 3600.0 + rng.random() * 5 * 3600.0
            centre = _pick(rng, ((0.5, "2APS"), (0.3, "MTI_"), (0.2, "SGS_"))) if dt_start < 1.6e9 else "2APS"
        track = pl.track(n)
        created = gen + 3600.0 * (1.0 + 3.0 * rng.random())
        dt, gen_s, bl = _stamp(dt_start), _stamp(gen), baseline.replace(".", "")
        shared = {  # the same for every tile of the datatake
            "level": level,
            "track": track,
            "bl": baseline,
            "dt": dt,
            "gen": gen_s,
            "dt_iso": _iso(dt_start),
            "gen_iso": _iso(gen),
            "created_iso": _iso(created),
            "datatake": f"G{pl.code}_{dt}_{n:06d}_N{baseline}",
            "dsid": f"{pl.code}_OPER_MSI_{level}_DS_{centre}_{gen_s}_S{dt}_N{baseline}",
            "centre": centre,
        }
        if len(self.seq) > 50_000 and self.index < self.slots:  # older than a month: cannot collide (until wrap)
            old = int(t / _DAY) - 40
            self.seq = {key: v for key, v in self.seq.items() if key[2] > old}
        out = []
        for name, (tile, tk) in tiles.items():
            when = anx + tk
            if abs(tile.lat) > 58.0 and _sun(tile.lon, tile.lat, when)[0] < 3.0:
                continue  # no acquisitions in the polar night
            key = (pl.code, name, int(when // _DAY))
            seq = self.seq.get(key, -1) + 1
            self.seq[key] = seq
            prod = f"{pl.code}_MSI{level}_{dt}_N{bl}_R{track:03d}_T{name}_{gen_s}"
            out.append(self.product(pl, when, when, n, False, tile.footprint, prod, tile=tile, seq=seq, shared=shared))
        return out

    @staticmethod
    def details(p: Product) -> dict[str, Any]:
        """Per-tile details, drawn on first use: most products of a provider's view are never rendered."""
        x = p.extra
        if "cloud" in x:
            return x
        tile: Tile = x["tile"]
        shared = x.pop("shared")
        x.update(shared)
        rng = _Draw(p.rng_seed)
        cloud = _cloud(rng)
        el, az = _sun(tile.lon, tile.lat, p.start)
        x.update(
            cloud=cloud,
            sun=(round(el, 6), round(az, 6)),
            when_iso=_iso(p.start),
            nodata=round(rng.random() * 60.0, 6) if rng.random() < 0.4 else 0.0,
            view=(round(rng.random() * 11.0, 6), round(rng.random() * 360.0, 6)),
            granule=f"{p.platform.code}_OPER_MSI_{x['level']}_TL_{x['centre']}_{x['gen']}_A{p.n:06d}_T{tile.name}"
            f"_N{x['bl']}",
            degraded=round(rng.random() * 0.05, 4),
            rcf=round(1.0 + 0.0334 * math.cos(_TWO_PI * ((p.start / _DAY) % 365.2422 - 3.0) / 365.2422), 9),
            ymd=_ymd(p.start),
        )
        if x["level"] == "L2A":
            parts = [rng.random() for _ in range(6)]
            f = (100.0 - cloud) / sum(parts)
            x["pct"] = (
                *zip(_S2_SURFACES, (round(v * f, 6) for v in parts), strict=True),
                ("unclassified", round(rng.random() * 2.0, 6)),
                ("medium_proba_clouds", round(cloud * 0.3, 6)),
                ("high_proba_clouds", round(cloud * 0.6, 6)),
                ("thin_cirrus", round(cloud * 0.1, 6)),
                ("saturated_defective_pixel", 0.0),
            )
        return x

    def render(self, p: Product, prov: Provider, off: Offering) -> JSON:
        x = self.details(p)
        pl = p.platform
        tile: Tile = x["tile"]
        style = off.style
        level = x["level"]
        name = tile.name
        sat = pl.code
        y, m, d = x["ymd"]
        root = prov.asset_root
        if style == "earth-search":
            item_id = f"{sat}_{int(name[:2])}{name[2:]}_{y}{m}{d}_{x['seq']}_{level}"
            base = (
                f"{root}/sentinel-s2-{level.lower()}-cogs/{int(name[:2])}/{name[2]}/{name[3:]}/{y}/{int(m)}/{item_id}"
            )
            props: JSON = {
                "datetime": x["when_iso"],
                "platform": f"sentinel-{sat[1:].lower()}",
                "constellation": "sentinel-2",
                "instruments": ["msi"],
                "eo:cloud_cover": x["cloud"],
                "proj:epsg": tile.epsg,
                "mgrs:utm_zone": tile.zone,
                "mgrs:latitude_band": name[2],
                "mgrs:grid_square": name[3:],
                "grid:code": f"MGRS-{name}",
                "view:sun_azimuth": x["sun"][1],
                "view:sun_elevation": x["sun"][0],
                "s2:sequence": str(x["seq"]),
            }
            exts = ["eo", "proj", "mgrs", "grid", "view", "s2", "processing"]
        elif style == "pc":
            item_id = f"{sat}_MSI{level}_{x['dt']}_R{x['track']:03d}_T{name}_{x['gen']}"
            base = f"{root}/sentinel2-{level.lower()}/{name[:2]}/{name[2]}/{name[3:]}/{y}/{m}/{d}/{p.name}.SAFE"
            props = {
                "datetime": x["dt_iso"],
                "platform": f"Sentinel-{sat[1:]}",
                "constellation": "Sentinel 2",
                "instruments": ["msi"],
                "proj:epsg": tile.epsg,
                "s2:mgrs_tile": name,
                "eo:cloud_cover": x["cloud"],
                "sat:orbit_state": "descending",
                "sat:relative_orbit": x["track"],
                "s2:mean_solar_zenith": round(90.0 - x["sun"][0], 6),
                "s2:mean_solar_azimuth": x["sun"][1],
            }
            exts = ["eo", "sat", "proj", "s2"]
        else:
            item_id = p.name
            base = f"{root}/Sentinel-2/MSI/{level}/{y}/{m}/{d}/{p.name}.SAFE"
            props = {
                "datetime": x["when_iso"],
                "platform": f"sentinel-{sat[1:].lower()}",
                "constellation": "sentinel-2",
                "instruments": ["msi"],
                "eo:cloud_cover": x["cloud"],
                "sat:orbit_state": "descending",
                "sat:relative_orbit": x["track"],
                "sat:absolute_orbit": p.n,
                "sat:platform_international_designator": pl.designator,
                "proj:epsg": tile.epsg,
                "grid:code": f"MGRS-{name}",
                "view:sun_azimuth": x["sun"][1],
                "view:sun_elevation": x["sun"][0],
                "view:incidence_angle": x["view"][0],
                "view:azimuth": x["view"][1],
                "processing:level": level[:2],
                "processing:facility": x["centre"],
                "processing:software": {"Sentinel-2 IPF": x["bl"]},
            }
            exts = ["eo", "sat", "proj", "grid", "view", "processing", "s2"]
        props["s2:product_type"] = f"S2MSI{level[1:]}"
        props["s2:processing_baseline"] = x["bl"]
        props["s2:product_uri"] = f"{p.name}.SAFE"
        props["s2:generation_time"] = x["gen_iso"]
        props["s2:datatake_id"] = x["datatake"]
        props["s2:datatake_type"] = "INS-NOBS"
        props["s2:datastrip_id"] = x["dsid"]
        props["s2:granule_id"] = x["granule"]
        props["s2:degraded_msi_data_percentage"] = x["degraded"]
        props["s2:nodata_pixel_percentage"] = x["nodata"]
        if level == "L2A":
            for key, value in x["pct"]:
                props[f"s2:{key}_percentage"] = value
        props["s2:reflectance_conversion_factor"] = x["rcf"]
        if style == "earth-search":
            props["processing:software"] = {"sentinel2-to-stac": "0.1.1"}
        props["created"] = x["created_iso"]
        props["updated"] = x["created_iso"]
        heavy = self.run.heavy and level == "L2A"
        if heavy:
            exts.append("raster")
            exts.append("file")
        assets = _s2_assets(style, level, base, tile, x["dt"], _Draw(p.rng_seed) if heavy else None)
        return _item(prov, off.collection, item_id, exts, p.fp, props, assets)


def _s2_band_specs() -> dict[tuple[str, bool], tuple[tuple[str, str, str, str, int, JSON], ...]]:
    """(band, key in earth-search style, title, description, gsd, eo:band) per level and weight, built once."""
    out = {}
    for level in ("L1C", "L2A"):
        for heavy in (False, True):
            rows = []
            for band, common, es_key, desc, centre, fwhm, gsd in _S2_BANDS:
                if (band == "B10" and level == "L2A") or (not heavy and band not in ("B02", "B03", "B04", "B08")):
                    continue
                number = band.lstrip("B0")
                eo = {
                    "name": band,
                    "common_name": common,
                    "description": f"Band {number} - {desc}",
                    "center_wavelength": centre,
                    "full_width_half_max": fwhm,
                }
                rows.append((band, es_key, f"Band {number} - {desc} - {gsd}m", desc, gsd, eo))
            out[(level, heavy)] = tuple(rows)
    return out


_S2_SPECS = _s2_band_specs()


def _s2_assets(style: str, level: str, base: str, tile: Tile, dt: str, rng: _Draw | None) -> JSON:
    """Band and metadata assets; heavy ones (rng given) carry raster:bands, proj and file fields like PC's."""
    es = style == "earth-search"
    heavy = rng is not None
    name = tile.name
    assets: JSON = {}
    img = f"{base}/GRANULE/{level}_T{name}_{dt}/IMG_DATA/"
    stem = f"T{name}_{dt}_"
    l2a = level == "L2A"
    ulx, uly = tile.ulx, tile.uly
    for band, es_key, title, _desc, gsd, eo in _S2_SPECS[(level, heavy)]:
        if es:
            href = f"{base}/{band}.tif"
        elif l2a:
            href = f"{img}R{gsd}m/{stem}{band}_{gsd}m.jp2"
        else:
            href = f"{img}{stem}{band}.jp2"
        a: JSON = {
            "href": href,
            "type": _COG if es else "image/jp2",
            "title": title,
            "roles": ["data", "reflectance"] if es else ["data"],
            "gsd": gsd,
            "eo:bands": [dict(eo)],
        }
        if rng is not None:
            size = 109800 // gsd
            a["proj:shape"] = [size, size]
            a["proj:transform"] = [float(gsd), 0.0, ulx, 0.0, -float(gsd), uly]
            a["raster:bands"] = [
                {
                    "nodata": 0,
                    "data_type": "uint16",
                    "bits_per_sample": 15,
                    "spatial_resolution": gsd,
                    "scale": 0.0001,
                    "offset": -0.1,
                }
            ]
            a["file:size"] = int(size * size * (0.9 + 0.6 * rng.random()))
            if es:
                a["file:checksum"] = _checksum(rng)
        assets[es_key if es else band] = a
    if rng is not None:
        for key, title, gsd, dtype in (
            ("AOT", "Aerosol optical thickness (AOT)", 10, "uint16"),
            ("WVP", "Water vapour (WVP)", 10, "uint16"),
            ("SCL", "Scene classification map (SCL)", 20, "uint8"),
        ):
            size = 109800 // gsd
            assets[key.lower() if es else key] = {
                "href": f"{base}/{key}.tif" if es else f"{img}R{gsd}m/{stem}{key}_{gsd}m.jp2",
                "type": _COG if es else "image/jp2",
                "title": title,
                "roles": ["data"],
                "gsd": gsd,
                "proj:shape": [size, size],
                "proj:transform": [float(gsd), 0.0, ulx, 0.0, -float(gsd), uly],
                "raster:bands": [{"nodata": 0, "data_type": dtype, "spatial_resolution": gsd}],
                "file:size": int(size * size * (0.1 + 0.2 * rng.random())),
            }
    if es:
        tci_href = f"{base}/TCI.tif"
    elif l2a:
        tci_href = f"{img}R10m/{stem}TCI_10m.jp2"
    else:
        tci_href = f"{img}{stem}TCI.jp2"
    tci: JSON = {
        "href": tci_href,
        "type": _COG if es else "image/jp2",
        "title": "True color image",
        "roles": ["visual"],
        "eo:bands": [
            {"name": "B04", "common_name": "red"},
            {"name": "B03", "common_name": "green"},
            {"name": "B02", "common_name": "blue"},
        ],
    }
    if rng is not None:
        tci["proj:shape"] = [10980, 10980]
        tci["proj:transform"] = [10.0, 0.0, ulx, 0.0, -10.0, uly]
        tci["raster:bands"] = [{"nodata": 0, "data_type": "uint8", "spatial_resolution": 10} for _ in range(3)]
    assets["visual"] = tci
    assets["thumbnail"] = {
        "href": f"{base}/{'L2A_PVI.jpg' if es else 'preview.jpg'}",
        "type": "image/jpeg",
        "title": "Thumbnail",
        "roles": ["thumbnail"],
    }
    if es:
        meta: tuple[tuple[str, str, str], ...] = (
            ("granule_metadata", "metadata.xml", "Granule metadata"),
            ("tileinfo_metadata", "tileInfo.json", "Tile information"),
        )
    else:
        meta = (
            ("safe-manifest", "manifest.safe", "SAFE manifest"),
            ("granule-metadata", f"GRANULE/{level}_T{name}_{dt}/MTD_TL.xml", "Granule metadata"),
            ("product-metadata", f"MTD_MSI{level}.xml", "Product metadata"),
        )
        if rng is not None:
            meta += (
                ("inspire-metadata", "INSPIRE.xml", "INSPIRE metadata"),
                ("datastrip-metadata", f"DATASTRIP/DS_{dt}/MTD_DS.xml", "Datastrip metadata"),
            )
    for key, path, title in meta:
        m: JSON = {
            "href": f"{base}/{path}",
            "type": "application/json" if path.endswith("json") else "application/xml",
            "title": title,
            "roles": ["metadata"],
        }
        if rng is not None:
            m["file:size"] = rng.randint(1_000, 600_000)
        assets[key] = m
    return assets


# --- Sentinel-3

_S3_TYPES = {
    "sentinel-3-olci": ((0.45, "OL_1_EFR___"), (0.1, "OL_1_ERR___"), (0.3, "OL_2_LFR___"), (0.15, "OL_2_WFR___")),
    "sentinel-3-slstr": ((0.6, "SL_1_RBT___"), (0.4, "SL_2_LST___")),
    "sentinel-3-sral": ((0.6, "SR_2_LAN___"), (0.4, "SR_2_WAT___")),
    "sentinel-3-synergy": ((1.0, "SY_2_SYN___"),),
}
# product type: swath left/right of track (km; OLCI is tilted west, away from sun glint), daylight only,
# processing centre, (timeliness weights), collection baseline, instruments, stactools asset names
_S3_SPEC: dict[str, tuple[float, float, bool, str, tuple[tuple[float, str], ...], str, tuple[str, ...]]] = {
    "OL_1_EFR___": (-290.0, 980.0, True, "LN1", ((0.35, "NR"), (0.65, "NT")), "002", ("OLCI",)),
    "OL_1_ERR___": (-290.0, 980.0, True, "LN1", ((0.35, "NR"), (0.65, "NT")), "002", ("OLCI",)),
    "OL_2_LFR___": (-290.0, 980.0, True, "LN1", ((0.35, "NR"), (0.65, "NT")), "002", ("OLCI",)),
    "OL_2_WFR___": (-290.0, 980.0, True, "MAR", ((0.35, "NR"), (0.65, "NT")), "003", ("OLCI",)),
    "SL_1_RBT___": (-350.0, 1050.0, False, "LN2", ((0.3, "NR"), (0.7, "NT")), "004", ("SLSTR",)),
    "SL_2_LST___": (-350.0, 1050.0, False, "LN2", ((0.3, "NR"), (0.7, "NT")), "004", ("SLSTR",)),
    "SR_2_LAN___": (-10.0, 10.0, False, "LN3", ((0.3, "NR"), (0.7, "NT")), "004", ("SRAL",)),
    "SR_2_WAT___": (-10.0, 10.0, False, "MAR", ((0.2, "NR"), (0.8, "NT")), "004", ("SRAL",)),
    "SY_2_SYN___": (-290.0, 980.0, True, "LN2", ((0.5, "ST"), (0.5, "NT")), "002", ("OLCI", "SLSTR")),
}
_OLCI = (
    (0.4, 0.015),
    (0.4125, 0.01),
    (0.4425, 0.01),
    (0.49, 0.01),
    (0.51, 0.01),
    (0.56, 0.01),
    (0.62, 0.01),
    (0.665, 0.01),
    (0.67375, 0.0075),
    (0.68125, 0.0075),
    (0.70875, 0.01),
    (0.75375, 0.0075),
    (0.76125, 0.0025),
    (0.764375, 0.00375),
    (0.7675, 0.0025),
    (0.77875, 0.015),
    (0.865, 0.02),
    (0.885, 0.01),
    (0.9, 0.01),
    (0.94, 0.02),
    (1.02, 0.04),
)
_S3_ASSETS = {
    "SL_1_RBT___": (
        *(f"slstr-s{i}-rad-an" for i in range(1, 7)),
        *("slstr-s7-bt-in", "slstr-s8-bt-in", "slstr-s9-bt-in", "slstr-f1-bt-fn"),
    ),
    "SL_2_LST___": ("lst-in", "slstr-geodetic-in", "slstr-flags-in", "slstr-indices-in", "slstr-met-tx"),
    "SR_2_LAN___": ("standard-measurement", "enhanced-measurement", "reduced-measurement"),
    "SR_2_WAT___": ("standard-measurement", "enhanced-measurement", "reduced-measurement"),
    "OL_2_LFR___": ("ogvi", "otci", "iwv", "rc-ogvi", "lqsf", "time-coordinates", "geo-coordinates"),
    "SY_2_SYN___": (
        *(f"syn-oa{i:02d}-reflectance" for i in (1, 2, 3, 4, 6, 8, 10, 17, 21)),
        *("syn-ato550", "syn-flags", "geolocation"),
    ),
}


def _u_window(day: bool) -> tuple[tuple[float, float], ...]:
    # Arguments of latitude (deg) where nadir is within 75 deg of the equator: the descending (daylight) half,
    # and for thermal / radar instruments the ascending (night) half as well.
    return ((102.0, 258.0),) if day else ((102.0, 258.0), (0.0, 78.0), (282.0, 360.0))


class _S3Gen(_Gen):
    def group(self) -> list[Product]:
        rng = self.rng
        ptype = _pick(rng, _S3_TYPES[self.family.name])
        left, right, day, centre, tls, baseline, _ = _S3_SPEC[ptype]
        timeliness = _pick(rng, tls)
        stripe = ptype == "OL_1_ERR___" or (ptype.startswith("SR_") and timeliness == "NT")
        frames = 1 if stripe else max(self.min_group, rng.randint(1, 10))
        t = self.target(frames)
        pl = self.platform_at(t)
        if pl is None:
            return []
        o = pl.orbit
        n = pl.orbit_at(t)
        if stripe:
            # ERR: the daylight half orbit; SRAL: pole-to-pole stripes of about 2800 s, named after the orbit
            # they start in.
            if ptype == "OL_1_ERR___":
                u0, u1 = 105.0, 255.0
            else:
                u0 = (97.0 if rng.random() < 0.5 else 277.0) + 4.0 * rng.random()
                u1 = u0 + 166.0
            spans = [(u0 / 360.0 * o.period + rng.random(), u1 / 360.0 * o.period)]
            frame_of: list[int | None] = [None]
        else:
            lo, hi = rng.choice(_u_window(day))
            first = math.ceil(lo / 360.0 * o.period / 180.0)
            last = math.floor(hi / 360.0 * o.period / 180.0) - 1
            if ptype.startswith("SR_"):  # NR radar altimetry comes in ~600 s dumps
                frames, step = 1, 598.0
            else:
                step = 180.0
            if last < first:
                return []
            f0 = rng.randint(first, max(first, last - frames + 1))
            coords = [f * 180 for f in range(f0, min(last, f0 + frames - 1) + 1)]
            spans = [(c + rng.random(), c + step) for c in coords]
            frame_of = [None if ptype.startswith("SR_") else c for c in coords]
        for k in range(6):
            # One timeliness per frame: stactools short ids do not tell NR from NT, so they would clash.
            if self.claim(pl, n + k, spans[0][0], spans[-1][1], ptype):
                n += k
                break
        else:
            return []
        anx = pl.anx(n)
        cycle, rel = pl.cycle(n), pl.track(n)
        lag = {"NR": 3 * 3600.0, "ST": 40 * 3600.0, "NT": 20 * _DAY}[timeliness]
        out = []
        for (a, b), frame in zip(spans, frame_of, strict=True):
            start, stop = anx + a, anx + b - (rng.random() * 20.0 if frame is None else 0.0)
            if frame is not None and rng.random() < 0.1:
                stop -= rng.uniform(10.0, 150.0)  # the last frame of a dump is short
            dur = int(stop) - int(start)
            created = stop + lag * (0.3 + 0.7 * rng.random())
            fr = f"{frame:04d}" if frame is not None else "____"
            name = (
                f"{pl.code}_{ptype}_{_stamp(start)}_{_stamp(stop)}_{_stamp(created)}_{dur:04d}_{cycle:03d}_{rel:03d}"
                f"_{fr}_{centre}_O_{timeliness}_{baseline}"
            )
            mid = (a + b) / 2.0
            steps = 12 if frame is None else 3
            out.append(
                self.product(
                    pl,
                    start,
                    stop,
                    n,
                    math.cos(_TWO_PI * mid / o.period) > 0,
                    (n, a, b, left, right, steps),
                    name,
                    published=created + 3600.0 * rng.random(),
                    ptype=ptype,
                    dur=dur,
                    cycle=cycle,
                    rel=rel,
                    frame=frame,
                    timeliness=timeliness,
                    cloud=_cloud(rng),
                )
            )
        return out

    def render(self, p: Product, prov: Provider, off: Offering) -> JSON:
        x = p.extra
        pl = p.platform
        ptype: str = x["ptype"]
        instruments = _S3_SPEC[ptype][6]
        level = f"L{ptype[3]}"
        y, m, d = _ymd(p.start)
        folder = instruments[0] if len(instruments) == 1 else "SYNERGY"
        safe = f"{prov.asset_root}/Sentinel-3/{folder}/{ptype.rstrip('_')}/{y}/{m}/{d}/{p.name}.SEN3"
        props: JSON = {
            "datetime": _iso((p.start + p.end) / 2.0),
            "start_datetime": _iso(p.start),
            "end_datetime": _iso(p.end),
        }
        optical = instruments != ("SRAL",) and level == "L2"
        if off.style == "stactools":
            short = ptype.rstrip("_")
            item_id = (
                f"{pl.code}_{short}_{_stamp(p.start)}_{_stamp(p.end)}_{x['dur']:04d}_{x['cycle']:03d}_{x['rel']:03d}"
            )
            if x["frame"] is not None:
                item_id += f"_{x['frame']:04d}"
            props.update(
                {
                    "platform": f"Sentinel-{pl.code[1:]}",
                    "constellation": "Sentinel-3",
                    "instruments": list(instruments),
                    "sat:platform_international_designator": pl.designator,
                    "sat:orbit_state": "ascending" if p.ascending else "descending",
                    "sat:absolute_orbit": p.n,
                    "sat:relative_orbit": x["rel"],
                    "s3:product_type": ptype,
                    "s3:processing_timeliness": x["timeliness"],
                    "s3:product_name": f"{folder.lower()}-{short[-3:].lower()}",
                }
            )
            if optical:
                props["eo:cloud_cover"] = x["cloud"]
            prng = _Draw(p.rng_seed)
            assets: JSON = {
                "safe-manifest": {
                    "href": f"{safe}/xfdumanifest.xml",
                    "type": "application/xml",
                    "description": "SAFE product manifest",
                    "file:size": prng.randint(80_000, 400_000),
                    "roles": ["metadata"],
                }
            }
            if ptype in ("OL_1_EFR___", "OL_1_ERR___"):
                for i, (centre, fwhm) in enumerate(_OLCI, 1):
                    assets[f"oa{i:02d}-radiance"] = {
                        "href": f"{safe}/Oa{i:02d}_radiance.nc",
                        "type": _NETCDF,
                        "description": f"TOA radiance for OLCI acquisition band Oa{i:02d}",
                        "eo:bands": [{"name": f"Oa{i:02d}", "center_wavelength": centre, "full_width_half_max": fwhm}],
                        "file:size": prng.randint(5_000_000, 90_000_000),
                        "roles": ["data"],
                    }
            else:
                for key in _S3_ASSETS.get(ptype, ("reflectance", "geo-coordinates", "instrument-data")):
                    assets[key] = {
                        "href": f"{safe}/{key.replace('-', '_')}.nc",
                        "type": _NETCDF,
                        "file:size": prng.randint(100_000, 60_000_000),
                        "roles": ["data"],
                    }
            exts = ["file", "sat"] + (["eo"] if optical or ptype.startswith("OL_1") else [])
            return _item(prov, off.collection, item_id, exts, p.fp, props, assets)
        props.update(
            {
                "platform": f"sentinel-{pl.code[1:].lower()}",
                "constellation": "sentinel-3",
                "instruments": [i.lower() for i in instruments],
                "sat:platform_international_designator": pl.designator,
                "sat:orbit_state": "ascending" if p.ascending else "descending",
                "sat:absolute_orbit": p.n,
                "sat:relative_orbit": x["rel"],
                "processing:level": level,
                "processing:facility": _S3_SPEC[ptype][3],
                "processing:version": p.name[-3:],
                "s3:product_type": ptype,
                "s3:processing_timeliness": x["timeliness"],
            }
        )
        if optical:
            props["eo:cloud_cover"] = x["cloud"]
        props["created"] = _iso(x["published"])
        props["updated"] = props["created"]
        assets = {
            "product": {
                "href": f"{safe}.zip",
                "type": "application/zip",
                "title": "Zipped product",
                "roles": ["data", "archive"],
            },
            "xfdumanifest": {
                "href": f"{safe}/xfdumanifest.xml",
                "type": "application/xml",
                "title": "SAFE manifest",
                "roles": ["metadata"],
            },
            "thumbnail": {
                "href": f"{safe}/quicklook.jpg",
                "type": "image/jpeg",
                "title": "Quicklook",
                "roles": ["thumbnail"],
            },
        }
        exts = ["sat", "processing"] + (["eo"] if optical else [])
        return _item(prov, off.collection, p.name, exts, p.fp, props, assets)


# --- Sentinel-5P

# (first day, collection, L1B processor, L2 processor)
_S5P_VERSIONS = (
    ("2018-04-30", "01", "010000", "010102"),
    ("2019-08-06", "01", "010000", "010302"),
    ("2020-12-02", "01", "010000", "010400"),
    ("2021-07-01", "02", "020000", "020200"),
    ("2022-07-26", "02", "020000", "020301"),
    ("2022-11-17", "03", "020100", "020400"),
    ("2023-11-14", "03", "020100", "020500"),
    ("2024-08-08", "03", "020100", "020600"),
)
_S5P_STARTS = [_epoch(r[0]) for r in _S5P_VERSIONS]
_S5P_L2 = (
    "L2__NO2___",
    "L2__CO____",
    "L2__O3____",
    "L2__CH4___",
    "L2__AER_AI",
    "L2__CLOUD_",
    "L2__HCHO__",
    "L2__SO2___",
)
_S5P_L1B = tuple(f"L1B_RA_BD{i}" for i in range(1, 9))
_S5P_TITLES = {
    "NO2___": "Nitrogen Dioxide Total Column",
    "CO____": "Carbon Monoxide Total Column",
    "O3____": "Ozone Total Column",
    "CH4___": "Methane Total Column",
    "AER_AI": "UV Aerosol Index",
    "CLOUD_": "Cloud Fraction, Albedo, Top Pressure",
    "HCHO__": "Formaldehyde Total Column",
    "SO2___": "Sulphur Dioxide Total Column",
}


class _S5PGen(_Gen):
    def group(self) -> list[Product]:
        rng = self.rng
        l2 = self.family.name.endswith("l2")
        offl = rng.random() < 0.7
        kinds = list(_S5P_L2 if l2 else _S5P_L1B)
        if not offl and l2:
            kinds.remove("L2__CH4___")  # methane has no near-real-time product
        rng.shuffle(kinds)
        types = sorted(kinds[: rng.randint(2, len(kinds))] if offl else kinds[: rng.randint(1, 4)])
        granules = 1 if offl else max(1, -(-self.min_group // len(types)), rng.randint(1, 6))
        t = self.target(len(types) * granules)
        pl = self.platform_at(t)
        if pl is None:
            return []
        o = pl.orbit
        n = pl.orbit_at(t)
        day = 70.0 / 360.0 * o.period  # the sunlit ascending half, where TROPOMI measures (within 70 deg)
        if offl:
            spans = [(o.start_offset, o.start_offset + o.period - 1.0 - 2.0 * rng.random())]
            shapes = [(-day, day, 8)]
        else:
            g0 = rng.randint(-4, 4 - min(granules, 8) + 1)
            spans = [(g * 300.0 + rng.random(), g * 300.0 + 300.0 + rng.random()) for g in range(g0, g0 + granules)]
            spans = [s for s in spans if -day <= s[0] and s[1] <= day] or spans[:1]
            shapes = [(max(a, -day), min(b, day), 2) for a, b in spans]
        for k in range(6):
            if self.claim(pl, n + k, spans[0][0], spans[-1][1], "OFFL" if offl else "NRTI"):
                n += k
                break
        else:
            return []
        anx = pl.anx(n)
        row = _S5P_VERSIONS[max(0, bisect.bisect_right(_S5P_STARTS, anx) - 1)]
        mode = "OFFL" if offl else "NRTI"
        out = []
        for (a, b), (sa, sb, steps) in zip(spans, shapes, strict=True):
            fp = _swath(pl, n, sa, sb, -1300.0, 1300.0, steps)
            start, stop = anx + a, anx + b
            for kind in types:
                lag = (3600.0 if not l2 else 2 * _DAY) if offl else 1800.0
                produced = stop + lag * (0.5 + rng.random())
                name = (
                    f"S5P_{mode}_{kind}_{_stamp(start)}_{_stamp(stop)}_{n:05d}_{row[1]}_"
                    f"{row[3] if l2 else row[2]}_{_stamp(produced)}"
                )
                out.append(
                    self.product(
                        pl,
                        start,
                        stop,
                        n,
                        True,
                        fp,
                        name,
                        kind=kind,
                        mode=mode,
                        collection=row[1],
                        published=produced + 1800.0 * rng.random(),
                    )
                )
        return out

    def render(self, p: Product, prov: Provider, off: Offering) -> JSON:
        x = p.extra
        kind: str = x["kind"]
        l2 = kind.startswith("L2")
        y, m, d = _ymd(p.start)
        href = f"{prov.asset_root}/Sentinel-5P/TROPOMI/{kind}/{y}/{m}/{d}/{p.name}.nc"
        props: JSON = {
            "datetime": _iso((p.start + p.end) / 2.0),
            "start_datetime": _iso(p.start),
            "end_datetime": _iso(p.end),
            "sat:platform_international_designator": p.platform.designator,
            "sat:absolute_orbit": p.n,
            "s5p:processing_mode": x["mode"],
            "s5p:product_type": kind,
            "s5p:collection_identifier": x["collection"],
        }
        title = _S5P_TITLES.get(kind[4:], f"Radiance band {kind[-1]}") if l2 else f"Radiance band {kind[-1]}"
        span = "1-Orbit" if x["mode"] == "OFFL" else "5-minute"
        if off.style == "stactools":
            short = kind[4:].rstrip("_").lower() if l2 else kind.lower()
            props.update(
                {
                    "instruments": ["TROPOMI"],
                    "platform": "Sentinel 5 Precursor",
                    "constellation": "Sentinel-5P",
                    "s5p:product_name": short,
                    "s5p:spatial_resolution": [5500, 3500],
                    "providers": [
                        {
                            "name": "ESA",
                            "roles": ["producer", "processor", "licensor"],
                            "url": "https://earth.esa.int/web/guest/home",
                        }
                    ],
                }
            )
            assets: JSON = {
                short: {
                    "href": href,
                    "type": _NETCDF,
                    "title": title,
                    "description": f"TROPOMI/S5P {title} {span} {'L2' if l2 else 'L1B'} Swath",
                    "roles": ["data", "metadata"],
                }
            }
            return _item(prov, off.collection, p.name, ["sat"], p.fp, props, assets)
        props.update(
            {
                "platform": "sentinel-5p",
                "constellation": "sentinel-5p",
                "instruments": ["tropomi"],
                "sat:orbit_state": "ascending",
                "processing:level": "L2" if l2 else "L1B",
                "processing:version": p.name.split("_")[-2],
                "created": _iso(x["published"]),
                "updated": _iso(x["published"]),
            }
        )
        assets = {"product": {"href": href, "type": _NETCDF, "title": title, "roles": ["data"]}}
        return _item(prov, off.collection, p.name, ["sat", "processing"], p.fp, props, assets)


# --- Landsat Collection 2

_LANDSAT_BANDS = {  # asset key, file suffix, band name, common name
    "LC": (
        ("coastal", "B1", "OLI_B1", "coastal"),
        ("blue", "B2", "OLI_B2", "blue"),
        ("green", "B3", "OLI_B3", "green"),
        ("red", "B4", "OLI_B4", "red"),
        ("nir08", "B5", "OLI_B5", "nir08"),
        ("swir16", "B6", "OLI_B6", "swir16"),
        ("swir22", "B7", "OLI_B7", "swir22"),
        ("lwir11", "B10", "TIRS_B10", "lwir11"),
    ),
    "LE": (
        ("blue", "B1", "ETM_B1", "blue"),
        ("green", "B2", "ETM_B2", "green"),
        ("red", "B3", "ETM_B3", "red"),
        ("nir08", "B4", "ETM_B4", "nir08"),
        ("swir16", "B5", "ETM_B5", "swir16"),
        ("lwir", "B6", "ETM_B6", "lwir"),
        ("swir22", "B7", "ETM_B7", "swir22"),
    ),
}
# Collection 2 reprocessing of the archive (first, last day), and acquisitions it covered (before this).
_C2_REPROCESSING = (_epoch("2020-08-20"), _epoch("2021-04-30"), _epoch("2020-11-01"))


class _LandsatGen(_Gen):
    def group(self) -> list[Product]:
        rng = self.rng
        l2 = self.family.name.endswith("l2")
        rows = max(self.min_group, rng.randint(1, 6))
        t = self.target(rows)
        pl = self.platform_at(t)
        if pl is None:
            return []
        aim = self.aim(pl, _LAND, t, False)
        if aim is None:
            return []
        n, tau = aim
        o = pl.orbit
        row_u = 360.0 / 248.0  # WRS-2 rows split the orbit in 248; row 60 is on the equator, descending
        r0 = max(1, min(122, round(60 + (tau / o.period * 360.0 - 180.0) / row_u) - rng.randint(0, rows - 1)))
        rows_taus = [(r, (180.0 + (r - 60) * row_u) / 360.0 * o.period) for r in range(r0, min(122, r0 + rows - 1) + 1)]
        half = 85.0 / _R_EARTH / _TWO_PI * o.period  # half a scene along track
        if not self.claim(pl, n, rows_taus[0][1] - half, rows_taus[-1][1] + half):
            return []
        anx = pl.anx(n)
        path = pl.track(n)
        out = []
        for row, tr in rows_taus:
            when = anx + tr + rng.uniform(-3.0, 3.0)
            recent = when > self.t1 - 30 * _DAY
            if l2:
                corr = "L2SP" if rng.random() < 0.93 else "L2SR"
                cat = "T1" if rng.random() < 0.72 else "T2"
            else:
                corr = _pick(rng, ((0.8, "L1TP"), (0.15, "L1GT"), (0.05, "L1GS")))
                cat = "RT" if recent and rng.random() < 0.5 else ("T1" if corr == "L1TP" else "T2")
            if cat == "RT":
                proc = when + rng.uniform(0.1, 0.9) * _DAY
            elif when < _C2_REPROCESSING[2]:
                lo = max(when, _C2_REPROCESSING[0])
                proc = lo + rng.random() * max(0.0, _C2_REPROCESSING[1] - lo)
            else:
                proc = when + rng.uniform(7.0, 25.0) * _DAY
            name = f"{pl.code}_{corr}_{path:03d}{row:03d}_{_stamp(when)[:8]}_{_stamp(proc)[:8]}_02_{cat}"
            lon, lat = pl.point(n, tr, 0.0)
            el, az = _sun(lon, lat, when)
            out.append(
                self.product(
                    pl,
                    when,
                    when,
                    n,
                    False,
                    (n, tr - half, tr + half, -92.5, 92.5, 1),
                    name,
                    published=proc + rng.uniform(1.0, 12.0) * 3600.0,
                    path=path,
                    row=row,
                    corr=corr,
                    cat=cat,
                    cloud=_cloud(rng),
                    lon=lon,
                    lat=lat,
                    sun=(round(max(el, 1.0), 8), round(az, 8)),
                )
            )
        return out

    def render(self, p: Product, prov: Provider, off: Offering) -> JSON:
        x = p.extra
        pl = p.platform
        sensor = pl.code
        pc = off.style == "pc"
        parts = p.name.split("_")
        item_id = "_".join(parts[:4] + parts[5:]) if pc else p.name
        lon, lat = x["lon"], x["lat"]
        if lat < -60.0:
            epsg = 3031  # Antarctic scenes are in polar stereographic
            e, nn = 0.0, 0.0
        else:
            zone = int((lon + 180.0) // 6.0) % 60 + 1
            epsg = 32600 + zone  # Landsat keeps northern UTM zones, with negative northings in the south
            e, nn = to_utm(lat, lon, zone)
            nn -= 10_000_000.0 if lat < 0 else 0.0
        ulx, uly = round((e - 3900 * 30) / 15.0) * 15.0, round((nn + 3900 * 30) / 15.0) * 15.0
        y = _ymd(p.start)[0]
        level = "L2" if x["corr"].startswith("L2") else "L1"
        base = (
            f"{prov.asset_root}/collection02/level-{level[1]}/standard/{sensor[:2].lower()}/{y}/{x['path']:03d}"
            f"/{x['row']:03d}/{p.name}"
        )
        doy = time.gmtime(int(p.start)).tm_yday
        props: JSON = {
            "datetime": _iso(p.start),
            "eo:cloud_cover": x["cloud"],
            "view:sun_azimuth": x["sun"][1],
            "view:sun_elevation": x["sun"][0],
            "view:off_nadir": 0,
            "platform": f"landsat-{int(sensor[2:])}" if pc else f"LANDSAT_{int(sensor[2:])}",
            "instruments": (["oli", "tirs"] if sensor[1] == "C" else ["etm+"])
            if pc
            else (["OLI", "TIRS"] if sensor[1] == "C" else ["ETM"]),
            "landsat:cloud_cover_land": round(min(100.0, x["cloud"] * 1.1), 2),
            "landsat:wrs_type": "2",
            "landsat:wrs_path": f"{x['path']:03d}",
            "landsat:wrs_row": f"{x['row']:03d}",
            "landsat:scene_id": f"{sensor[0]}{sensor[1]}{sensor[3]}{x['path']:03d}{x['row']:03d}{y}{doy:03d}LGN00",
            "landsat:collection_category": x["cat"],
            "landsat:collection_number": "02",
            "landsat:correction": x["corr"],
            "proj:epsg": epsg,
            "proj:shape": [7801, 7711],
            "proj:transform": [30.0, 0.0, ulx, 0.0, -30.0, uly],
        }
        if pc:
            props["gsd"] = 30
            props["description"] = f"Landsat Collection 2 Level-{level[1]}"
        props["created"] = _iso(x["published"])
        props["updated"] = props["created"]
        assets: JSON = {}
        for key, suffix, band, common in _LANDSAT_BANDS[sensor[:2]]:
            thermal = band.startswith("TIRS") or band == "ETM_B6"
            if level == "L2" and thermal and x["corr"] == "L2SR":
                continue
            prefix = ("ST_" if thermal else "SR_") if level == "L2" else ""
            assets[key] = {
                "href": f"{base}/{p.name}_{prefix}{suffix}.TIF",
                "type": _COG,
                "title": f"{'Surface Temperature' if thermal and level == 'L2' else common.capitalize()} Band",
                "eo:bands": [{"name": band, "common_name": common}],
                "roles": ["data"],
            }
        assets["qa_pixel"] = {
            "href": f"{base}/{p.name}_QA_PIXEL.TIF",
            "type": _COG,
            "title": "Pixel Quality Assessment Band",
            "roles": ["cloud"],
        }
        assets["mtl.json"] = {
            "href": f"{base}/{p.name}_MTL.json",
            "type": "application/json",
            "title": "Product Metadata File (json)",
            "roles": ["metadata"],
        }
        assets["thumbnail"] = {
            "href": f"{base}/{p.name}_thumb_small.jpeg",
            "type": "image/jpeg",
            "title": "Thumbnail image",
            "roles": ["thumbnail"],
        }
        return _item(
            prov, off.collection, item_id, ["eo", "view", "proj", "landsat"], p.fp, props, assets, _USGS_LICENSE
        )


_GENERATORS: dict[str, Callable[[Family, _Run, float, float, int], _Gen]] = {
    "S1": _S1Gen,
    "S2": _S2Gen,
    "S3": _S3Gen,
    "S5P": _S5PGen,
    "LANDSAT": _LandsatGen,
}

# ---------------------------------------------------------------------------------------------------- holdings

_PHI1 = 0.6180339887498949  # golden ratio: a low-discrepancy sequence keeps each provider's share exact
_PHI2 = 0.7548776662466927  # plastic number: independent of the first


class _Holding:
    """Who holds each product of a family: a primary by weight; replicas for the asked fraction of items."""

    def __init__(self, family: str, replica_fraction: float, rng: random.Random) -> None:
        self.servers = [(p, o) for p in FEDERATION if (o := p.offering(family)) is not None]
        self.weights = [o.weight for _, o in self.servers]
        total = sum(self.weights)
        self.cum = [sum(self.weights[: i + 1]) / total for i in range(len(self.weights))]
        self.third = 0.25 if len(self.servers) >= 3 else 0.0
        f = min(max(replica_fraction, 0.0), 1.0)
        m = 2.0 + self.third
        # f = q m / (1 - q + q m) is the fraction of items whose product has more than one holder.
        self.q = 0.0 if len(self.servers) < 2 else min(1.0, f / (m * (1.0 - f) + f))
        self.c1, self.c2 = rng.random(), rng.random()
        self.rng = rng

    def holders(self, j: int) -> list[int]:
        u1 = (j * _PHI1 + self.c1) % 1.0
        first = min(bisect.bisect_right(self.cum, u1), len(self.servers) - 1)
        chosen = [first]
        if (j * _PHI2 + self.c2) % 1.0 < self.q:
            chosen.append(self._draw(chosen))
            if self.rng.random() < self.third:
                chosen.append(self._draw(chosen))
        return sorted(chosen)

    def _draw(self, taken: list[int]) -> int:
        free = [i for i in range(len(self.servers)) if i not in taken]
        x = self.rng.random() * sum(self.weights[i] for i in free)
        for i in free:
            x -= self.weights[i]
            if x < 0:
                return i
        return free[-1]

    def expected(self, names: frozenset[str] | None) -> float:
        """Expected items per product of this family seen by a view (a set of provider names, or all)."""
        k = len(self.servers)
        w = self.weights
        seen = [names is None or p.name in names for p, _ in self.servers]
        total = 0.0
        for a in range(k):
            pa = w[a] / sum(w)
            single = float(seen[a])
            rep = single
            others = [i for i in range(k) if i != a]
            for b in others:
                pb = w[b] / sum(w[i] for i in others)
                rest = [i for i in others if i != b]
                third = 0.0
                for c in rest:
                    third += w[c] / sum(w[i] for i in rest) * seen[c]
                rep += pb * (seen[b] + self.third * third)
            total += pa * ((1.0 - self.q) * single + self.q * rep)
        return total


# ---------------------------------------------------------------------------------------------------- the stream


class _Run:
    def __init__(
        self,
        *,
        seed: int,
        heavy: bool,
        t0: float,
        t1: float,
        families: Sequence[Family],
        view: frozenset[str] | None,
        replica_fraction: float,
        count: int,
    ) -> None:
        self.seed = seed
        self.heavy = heavy
        self.view = view
        spans: dict[str, tuple[float, float]] = {}
        for fam in families:
            pls = [PLATFORMS[code] for code in MISSION_PLATFORMS[fam.mission]]
            a, b = max(t0, min(p.first for p in pls)), min(t1, max(p.last for p in pls))
            if b - a > _DAY:
                spans[fam.name] = (a, b)
        self.holdings = {f: _Holding(f, replica_fraction, random.Random(f"{seed}/{f}/holders")) for f in spans}
        shares = {f: FAMILY[f].share for f in spans}
        norm = sum(shares.values()) or 1.0
        per_product = {f: self.holdings[f].expected(view) for f in spans}
        mean = sum(shares[f] / norm * per_product[f] for f in spans)
        if mean <= 0.0:
            raise ValueError("the chosen providers hold none of the chosen collections in that time range")
        products = count / mean
        self.gens: list[tuple[_Gen, _Holding, float]] = []
        for f, (a, b) in spans.items():
            if per_product[f] <= 0.0:
                continue
            fam = FAMILY[f]
            slots = max(1, round(products * shares[f] / norm))
            self.gens.append((_GENERATORS[fam.mission](fam, self, a, b, slots), self.holdings[f], shares[f]))

    def products(self) -> Iterator[tuple[_Gen, _Holding, Product, int]]:
        """Products of every family, interleaved by share (stride scheduling). A family whose orbits in the time
        range are all taken drops out and the others go on."""
        streams = [(g, h, (p for grp in g.groups() for p in grp)) for g, h, _ in self.gens]
        strides = [1.0 / w for _, _, w in self.gens]
        heap = [(s / 2.0, i) for i, s in enumerate(strides)]
        heapq.heapify(heap)
        counts = [0] * len(streams)
        while heap:
            due, i = heapq.heappop(heap)
            g, h, it = streams[i]
            product = next(it, None)
            if product is None:
                continue
            yield g, h, product, counts[i]
            counts[i] += 1
            heapq.heappush(heap, (due + strides[i], i))


def _families(collections: Sequence[str] | None) -> list[Family]:
    if collections is None:
        return list(FAMILIES)
    aliases: dict[str, str] = {f.name.lower(): f.name for f in FAMILIES}
    for p in FEDERATION:
        for o in p.offerings:
            aliases.setdefault(o.collection.lower(), o.family)
    chosen: list[Family] = []
    for c in collections:
        name = aliases.get(c.lower())
        if name is None:
            raise ValueError(f"unknown collection {c!r}; known: {', '.join(sorted(aliases))}")
        if FAMILY[name] not in chosen:
            chosen.append(FAMILY[name])
    return chosen


def _provider_names(names: Iterable[str] | None) -> frozenset[str] | None:
    if names is None:
        return None
    known = {p.name.lower(): p.name for p in FEDERATION}
    out = set()
    for n in names:
        if n.lower() not in known:
            raise ValueError(f"unknown provider {n!r}; known: {', '.join(p.name for p in FEDERATION)}")
        out.add(known[n.lower()])
    return frozenset(out)


def generate_with_truth(
    *,
    providers: Iterable[str] | None = None,
    count: int,
    seed: int = 0,
    heavy: bool = False,
    start: str = "2018-01-01",
    end: str = "2024-12-31",
    collections: Sequence[str] | None = None,
    replica_fraction: float = 0.3,
) -> Iterator[tuple[str, JSON, str]]:
    """Yield (provider_name, item, product_id): ``count`` items of the chosen providers (all by default).

    ``product_id`` names the underlying product: items of two providers with the same product_id are replicas
    (the ground truth for merging them by product key). ``end`` is inclusive. Fewer than ``count`` items come
    only when the time range has not orbits enough for them (millions of items in a few days).
    """
    if count < 0:
        raise ValueError("count must be >= 0")
    view = _provider_names(providers)
    t0, t1 = _epoch(start), _epoch(end) + _DAY
    if t1 <= t0:
        raise ValueError("end must not be before start")
    if count == 0:
        return
    run = _Run(
        seed=seed,
        heavy=heavy,
        t0=t0,
        t1=t1,
        families=_families(collections),
        view=view,
        replica_fraction=replica_fraction,
        count=count,
    )
    emitted = 0
    for gen, holding, product, j in run.products():
        for i in holding.holders(j):
            prov, off = holding.servers[i]
            if view is not None and prov.name not in view:
                continue
            yield prov.name, gen.render(product, prov, off), f"{product.family}/{product.uid & 0xFFFFFFFFFF:010d}"
            emitted += 1
            if emitted == count:
                return


def generate(
    *,
    provider: str | None = None,
    count: int,
    seed: int = 0,
    heavy: bool = False,
    start: str = "2018-01-01",
    end: str = "2024-12-31",
    collections: Sequence[str] | None = None,
    replica_fraction: float = 0.3,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (provider_name, item_dict). With provider=None, items of all providers of the sample federation.

    ``count`` items in all, spread over [start, end]; the same arguments always give the same items.
    ``collections`` takes family names (``sentinel-2-l2a``) or any provider's collection id (``SENTINEL1_GRD``).
    ``heavy`` makes Sentinel-2 L2A items as heavy as Planetary Computer's (about 15 KB each).
    ``replica_fraction`` is the share of items whose product another provider holds too.
    """
    for name, item, _ in generate_with_truth(
        providers=None if provider is None else [provider],
        count=count,
        seed=seed,
        heavy=heavy,
        start=start,
        end=end,
        collections=collections,
        replica_fraction=replica_fraction,
    ):
        yield name, item


def write_ndjson(path: str | Path, items: Iterable[Mapping[str, Any] | tuple[str, Mapping[str, Any]]]) -> int:
    """Write items (dicts, or (provider, dict) pairs as ``generate`` yields) as NDJSON; return how many."""
    count = 0
    buf: list[bytes] = []
    with open(path, "wb") as out:
        for item in items:
            buf.append(orjson.dumps(item[1] if isinstance(item, tuple) else item, option=orjson.OPT_APPEND_NEWLINE))
            count += 1
            if len(buf) >= 1024:
                out.write(b"".join(buf))
                buf.clear()
        out.write(b"".join(buf))
    return count


# ---------------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    names = ", ".join(p.name for p in FEDERATION)
    parser = argparse.ArgumentParser(
        prog="sample_federation.py",
        description=(
            "Write a deterministic sample federation of Copernicus/Landsat STAC items as NDJSON, one file per\n"
            f"provider (DIR/<PROVIDER>.ndjson). Providers: {names}.\n"
            "About 30 % of the items are replicas: the same product held by several providers under their own\n"
            "ids. The same arguments always give the same bytes. A one-line summary per file goes to stderr."
        ),
        epilog=(
            "Examples:  sample_federation.py --out demo-out --count 10000\n"
            "           sample_federation.py --single-file /tmp/eodc.ndjson --providers EODC --count 1000000\n"
            "Exit codes: 0 done, 2 bad arguments."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dest = parser.add_mutually_exclusive_group(required=True)
    dest.add_argument("--out", type=Path, metavar="DIR", help="folder for one NDJSON file per provider")
    dest.add_argument(
        "--single-file", type=Path, metavar="PATH", help="write every item of one provider (--providers NAME) to PATH"
    )
    parser.add_argument("--count", type=int, required=True, help="items in all (over the chosen providers)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--heavy", action="store_true", help="Sentinel-2 L2A items as heavy as Planetary Computer's (~15 KB)"
    )
    parser.add_argument("--providers", metavar="A,B", help=f"comma-separated subset of: {names}")
    parser.add_argument(
        "--collections", metavar="A,B", help="comma-separated families or collection ids (default: all)"
    )
    parser.add_argument("--start", default="2018-01-01", help="first day (default 2018-01-01)")
    parser.add_argument("--end", default="2024-12-31", help="last day, inclusive (default 2024-12-31)")
    parser.add_argument(
        "--replica-fraction",
        type=float,
        default=0.3,
        help="share of items whose product another provider holds too (default 0.3)",
    )
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.providers.split(",") if s.strip()] if args.providers else None
    collections = [s.strip() for s in args.collections.split(",") if s.strip()] if args.collections else None
    if args.single_file is not None and (chosen is None or len(chosen) != 1):
        parser.error("--single-file needs exactly one provider in --providers")
    try:
        view = _provider_names(chosen)
        items = generate_with_truth(
            providers=view,
            count=args.count,
            seed=args.seed,
            heavy=args.heavy,
            start=args.start,
            end=args.end,
            collections=collections,
            replica_fraction=args.replica_fraction,
        )
        names_out = sorted(view) if view is not None else [p.name for p in FEDERATION]
        if args.single_file is not None:
            paths = {names_out[0]: args.single_file}
        else:
            args.out.mkdir(parents=True, exist_ok=True)
            paths = {n: args.out / f"{n}.ndjson" for n in names_out}
        t = time.perf_counter()
        stats = _write_split(paths, items)
    except ValueError as exc:
        parser.error(str(exc))
    elapsed = max(time.perf_counter() - t, 1e-9)
    total = sum(n for n, _, _ in stats.values())
    for name, path in paths.items():
        n, size, colls = stats[name]
        parts = ", ".join(f"{c} {k}" for c, k in sorted(colls.items()))
        print(
            f"{path}: {n} items, {size / 1e6:.1f} MB [{parts}]; run: {total} items in {elapsed:.1f} s, "
            f"{total / elapsed:,.0f} items/s",
            file=sys.stderr,
        )
    return 0


def _write_split(
    paths: Mapping[str, Path], items: Iterable[tuple[str, JSON, str]]
) -> dict[str, tuple[int, int, dict[str, int]]]:
    files = {name: open(path, "wb") for name, path in paths.items()}  # noqa: SIM115 - closed below
    bufs: dict[str, list[bytes]] = {name: [] for name in paths}
    stats: dict[str, list[Any]] = {name: [0, 0, {}] for name in paths}
    dumps = orjson.dumps
    opt = orjson.OPT_APPEND_NEWLINE
    try:
        for name, item, _ in items:
            line = dumps(item, option=opt)
            buf = bufs[name]
            buf.append(line)
            s = stats[name]
            s[0] += 1
            s[1] += len(line)
            s[2][item["collection"]] = s[2].get(item["collection"], 0) + 1
            if len(buf) >= 1024:
                files[name].write(b"".join(buf))
                buf.clear()
        for name, buf in bufs.items():
            files[name].write(b"".join(buf))
    finally:
        for f in files.values():
            f.close()
    return {name: (s[0], s[1], s[2]) for name, s in stats.items()}


if __name__ == "__main__":
    sys.exit(main())
