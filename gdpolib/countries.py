"""GlobalOpinionQA country names, in the dataset's own spelling, and friendly aliases.

The names are the keys of the `selections` field of `Anthropic/llm_global_opinions`. A data file
may hold a country that is not listed here; `resolve_country(name, available=...)` accepts it.
"""
from __future__ import annotations

import difflib

GOQA_COUNTRIES: tuple[str, ...] = (
    "Albania", "Andorra", "Angola (Non-national sample)", "Argentina", "Armenia", "Australia",
    "Austria", "Azerbaijan", "Bangladesh", "Bangladesh (Non-national sample)", "Belarus",
    "Belgium", "Bolivia", "Bolivia (Non-national sample)", "Bosnia Herzegovina", "Brazil",
    "Brazil (Non-national sample)", "Britain", "Bulgaria", "Burkina Faso", "Canada", "Chile",
    "China", "China (Non-national sample)", "Colombia", "Croatia", "Cyprus", "Czech Rep.",
    "Czechia", "Denmark", "Ecuador", "Egypt", "Egypt (Non-national sample)", "El Salvador",
    "Estonia", "Ethiopia", "Ethiopia (Non-national sample)", "Finland", "France", "Georgia",
    "Germany", "Ghana", "Great Britain", "Greece", "Guatemala", "Guatemala (Non-national sample)",
    "Honduras (Non-national sample)", "Hong Kong SAR", "Hungary", "Iceland",
    "India (Current national sample)", "India (Non-national sample)", "India (Old national sample)",
    "Indonesia", "Indonesia (Non-national sample)", "Iran", "Iraq", "Israel", "Italy",
    "Ivory Coast (Non-national sample)", "Japan", "Jordan", "Kazakhstan", "Kenya", "Kuwait",
    "Kyrgyzstan", "Latvia", "Lebanon", "Libya", "Lithuania", "Macau SAR", "Malaysia", "Maldives",
    "Mali", "Mali (Non-national sample)", "Mexico", "Mongolia", "Montenegro", "Morocco",
    "Morocco (Non-national sample)", "Myanmar", "Netherlands", "New Zealand", "Nicaragua",
    "Nigeria", "Nigeria (Non-national sample)", "North Macedonia", "Northern Ireland", "Norway",
    "Pakistan", "Pakistan (Non-national sample)", "Palest. ter.", "Peru", "Philippines", "Poland",
    "Portugal", "Puerto Rico", "Romania", "Russia", "Russia (Non-national sample)", "S. Africa",
    "S. Africa (Non-national sample)", "S. Korea", "Senegal", "Senegal (Non-national sample)",
    "Serbia", "Singapore", "Slovakia", "Slovenia", "South Korea", "Spain", "Sweden", "Switzerland",
    "Taiwan", "Taiwan ROC", "Tajikistan", "Tanzania", "Thailand", "Tunisia", "Turkey", "Uganda",
    "Ukraine", "United States", "Uruguay", "Uzbekistan", "Venezuela",
    "Venezuela (Non-national sample)", "Vietnam", "Vietnam (Non-national sample)", "Zimbabwe",
)

# Friendly names -> the dataset's spelling. Matching is case-insensitive.
ALIASES: dict[str, str] = {
    "us": "United States", "usa": "United States", "united states of america": "United States",
    "america": "United States",
    "pk": "Pakistan",
    "sa": "S. Africa", "za": "S. Africa", "south africa": "S. Africa",
    "uk": "Great Britain", "gb": "Great Britain",
    "india": "India (Current national sample)", "in": "India (Current national sample)",
    "korea": "S. Korea", "czech republic": "Czech Rep.",
    "palestine": "Palest. ter.", "palestinian territories": "Palest. ter.",
    "ng": "Nigeria", "de": "Germany", "fr": "France", "jp": "Japan", "cn": "China",
    "br": "Brazil", "ca": "Canada", "mx": "Mexico", "au": "Australia", "eg": "Egypt",
}


class UnknownCountryError(ValueError):
    """A country name that is neither a dataset key nor a known alias."""


def resolve_country(name: str, available: tuple[str, ...] | list[str] | None = None) -> str:
    """Map a user's country name to the dataset's spelling.

    Exact dataset keys win, then aliases (case-insensitive). `available` (the keys of the data
    actually loaded) replaces the built-in list when given. Unknown names raise
    UnknownCountryError listing the closest valid names.
    """
    names = tuple(available) if available is not None else GOQA_COUNTRIES
    if name in names:
        return name
    lowered = {n.lower(): n for n in names}
    key = str(name).strip().lower()
    if key in lowered:
        return lowered[key]
    if key in ALIASES and ALIASES[key] in names:
        return ALIASES[key]
    close = difflib.get_close_matches(str(name), names, n=5, cutoff=0.5)
    close += [ALIASES[a] for a in difflib.get_close_matches(key, ALIASES, n=3, cutoff=0.6)]
    hint = f"; closest valid names: {', '.join(dict.fromkeys(close))}" if close else ""
    raise UnknownCountryError(f"unknown country {name!r}{hint}")


def country_slug(country: str) -> str:
    """A short, path-safe name for run directories: 'S. Africa' -> 'sa'."""
    for alias, target in ALIASES.items():
        if target == country and len(alias) <= 3:
            return alias
    return "".join(c if c.isalnum() else "-" for c in country.lower()).strip("-").replace("--", "-")
