"""How the figures read, apart from what they show: colours that stand out on white, titles
and notes that fit their figure, log axes with labelled ticks and a range that one line far
from the others cannot stretch. plot.py draws the figures with these (docs/figures.md).
"""

from __future__ import annotations

import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.ticker import (
    FixedLocator,
    FuncFormatter,
    LogFormatterSciNotation,
    LogLocator,
    MaxNLocator,
    NullFormatter,
)

# WCAG 2.1 (1.4.11, non-text contrast): lines and markers at least 3:1 against the white page.
# Okabe and Ito's orange and sky blue are 2.3:1 as they are, a 55 % tint of them 1.4:1.
MIN_CONTRAST = 3.0
LIGHTEST, DARKEST = -0.55, 0.45  # the shades' range: 55 % white ... 45 % black (see _mixed)
DARK_RANGE = 0.45  # at least this far from the lightest shade to the darkest


def luminance(colour) -> float:
    """WCAG 2.1 relative luminance of an sRGB colour (0 black ... 1 white)."""
    c = np.asarray(to_rgb(colour) if not isinstance(colour, np.ndarray) else colour, dtype=float)
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return float(linear @ [0.2126, 0.7152, 0.0722])


def contrast_on_white(colour) -> float:
    """WCAG 2.1 contrast ratio of ``colour`` against white: 1 (white) ... 21 (black)."""
    return 1.05 / (luminance(colour) + 0.05)


def _mixed(base: np.ndarray, amount: float) -> np.ndarray:
    """``base`` mixed with white (amount < 0) or black (amount > 0) by |amount|; same hue."""
    target = np.ones(3) if amount < 0 else np.zeros(3)
    return base + (target - base) * abs(amount)


def _lightest(base: np.ndarray) -> float:
    """The lightest mix from LIGHTEST on that keeps MIN_CONTRAST (luminance falls as the amount rises)."""
    low, high = LIGHTEST, 1.0
    if contrast_on_white(_mixed(base, low)) >= MIN_CONTRAST:
        return low
    for _ in range(30):
        mid = (low + high) / 2
        low, high = (low, mid) if contrast_on_white(_mixed(base, mid)) >= MIN_CONTRAST else (mid, high)
    return high


def shade(colour, i: int, n: int) -> tuple:
    """The i-th of n shades of ``colour``, light to dark, same hue: the lightest is as pale as
    MIN_CONTRAST allows (down to a 55 % tint), the darkest a 45 % shade. One shade alone is
    the colour itself, darkened just enough where it has less than MIN_CONTRAST."""
    base = np.array(to_rgb(colour))
    light = _lightest(base)
    if n < 2:
        return tuple(_mixed(base, max(light, 0.0)))
    dark = max(DARKEST, light + DARK_RANGE)
    return tuple(_mixed(base, light + (dark - light) * i / (n - 1)))


# --------------------------------------------------------------------------- text that fits
MARGIN = 0.1  # inches kept free at each side of a figure-wide text
SMALLER_TITLES = (7.5, 7.0)  # pt: tried, in turn, when a title does not fit at its own size


def text_width(figure: Figure, text: str, points: float) -> float:
    """Width in inches of one line of ``text`` at ``points`` pt, as the figure's canvas draws it."""
    renderer = figure.canvas.get_renderer()
    width, _, _ = renderer.get_text_width_height_descent(text, FontProperties(size=points), ismath=False)
    return width / renderer.dpi


def wrap(text: str, figure: Figure, points: float) -> str:
    """``text`` with each of its lines broken at spaces so that none is wider than the figure."""
    room = figure.get_figwidth() - 2 * MARGIN
    lines = []
    for paragraph in text.splitlines():
        line = ""
        for word in paragraph.split(" "):
            longer = f"{line} {word}" if line else word
            if line and text_width(figure, longer, points) > room:
                lines.append(line)
                longer = word
            line = longer
        lines.append(line)
    return "\n".join(lines)


def fit_title(figure: Figure, title: str, points: float, max_lines: int = 2) -> tuple[str, float]:
    """``title`` in at most ``max_lines`` lines across the figure, and its size in pt: its own
    lines where each fits, else run on as one (lines joined by '; '), else the same in a
    smaller font (SMALLER_TITLES), else its first lines with an ellipsis."""
    for size in (points, *(s for s in SMALLER_TITLES if s < points)):
        for text in dict.fromkeys((title, "; ".join(title.splitlines()))):
            lines = wrap(text, figure, size)
            if lines.count("\n") < max_lines:
                return lines, size
    kept = lines.splitlines()[:max_lines]
    room = figure.get_figwidth() - 2 * MARGIN
    while " " in kept[-1] and text_width(figure, kept[-1] + " …", size) > room:
        kept[-1] = kept[-1].rsplit(" ", 1)[0]
    return "\n".join(kept[:-1] + [kept[-1] + " …"]), size


# --------------------------------------------------------------------------- log axes
# Tick values within a decade for a log axis of less than two decades, the roundest first.
NICE_TICKS = (1, 2, 5, 3, 1.5, 4, 6, 8, 1.2, 2.5)
MAX_TICKS = 7  # about this many ticks on such an axis: none closer than 1/(MAX_TICKS + 1) of its height


def _nice_ticks(low: float, high: float) -> list[float]:
    """Round values in [low, high], the roundest first, none closer to another than 1/(MAX_TICKS + 1)
    of the axis; then one nearer each end where the axis runs on past its last tick by more
    than 1.5 times that (else 1.45 would stand above a top tick of 1)."""
    decades = range(int(np.floor(np.log10(low))), int(np.ceil(np.log10(high))) + 1)
    values = [v for s in NICE_TICKS for d in decades if low <= (v := round(s * 10.0 ** d, 12)) <= high]
    gap = np.log10(high / low) / (MAX_TICKS + 1)

    def apart(v, others, distance):
        return all(abs(np.log10(v / o)) >= distance for o in others)

    chosen = []
    for v in values:
        if apart(v, chosen, gap):
            chosen.append(v)
    for end in (high, low):
        nearest = min(chosen, key=lambda v: abs(np.log10(end / v)), default=None)
        if nearest is not None and abs(np.log10(end / nearest)) > 1.5 * gap:
            nearer = [v for v in values if abs(np.log10(end / v)) < abs(np.log10(end / nearest))
                      and apart(v, chosen, 0.75 * gap)]
            chosen += [min(nearer, key=lambda v: abs(np.log10(end / v)))] if nearer else []
    return sorted(chosen)


def readable_log_ticks(ax) -> None:
    """Labels on a log y axis: plain numbers (0.3, 0.5, 1, 1.5; _nice_ticks) where the axis
    spans under two decades (matplotlib would write 2×10^0, or leave the top without a
    label); powers of ten on a wider one. Call it once the axis has its limits."""
    low, high = ax.get_ylim()
    if low <= 0 or high / low >= 100:
        ax.yaxis.set_major_locator(LogLocator())
        ax.yaxis.set_major_formatter(LogFormatterSciNotation())
    else:
        ticks = _nice_ticks(low, high)
        if len(ticks) < 2:  # a sliver of a decade: evenly spaced values
            ticks = [t for t in MaxNLocator(nbins=4).tick_values(low, high) if low <= t <= high]
        ax.yaxis.set_major_locator(FixedLocator(ticks))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def log_window(lines: list, decades: float) -> tuple[float, float] | None:
    """y limits for ``lines`` (arrays of values) on one log axis: every positive value, unless
    they span more than ``decades``; then a window of that many decades around the median of
    the lines' medians, so one line far from the others cannot squash them (what it leaves
    out, the caller marks). None where no value is positive."""
    logs = [np.log10(v[np.isfinite(v) & (v > 0)]) for v in (np.asarray(x, dtype=float) for x in lines)]
    logs = [v for v in logs if v.size]
    if not logs:
        return None
    low, high = min(v.min() for v in logs), max(v.max() for v in logs)
    if high - low > decades:
        centre = float(np.median([np.median(v) for v in logs]))
        low = max(low, centre - decades / 2)
        high = min(high, low + decades)
        low = max(min(v.min() for v in logs), high - decades)
    pad = 0.04 * max(high - low, 0.25)
    return 10 ** (low - pad), 10 ** (high + pad)
