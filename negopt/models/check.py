"""The ``negopt models check`` table: one row per component of a profile."""

from __future__ import annotations

from negopt.models.find import ComponentStatus


def _count(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def format_table(statuses: list[ComponentStatus], profile_name: str) -> str:
    """A plain-text table (component, source, available, parameters) and a how-to line per missing item."""
    rows = [("component", "source", "available", "params")]
    rows += [
        (s.component, s.source, "yes" if s.available else "MISSING", _count(s.num_params)) for s in statuses
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"profile: {profile_name}"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    missing = [s for s in statuses if not s.available]
    if missing:
        lines.append(f"{len(missing)} missing:")
        lines += [f"  {s.component}: {s.how_to}" for s in missing]
    else:
        lines.append("all components available")
    return "\n".join(lines)
