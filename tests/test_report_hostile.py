"""Hostile prompts and negatives render as text in the report and its image grid: no tag, attribute or
script from the data is live, direction controls stay inside their cell, and the page is valid UTF-8.
A lone surrogate never reaches the report: clean turns it into U+FFFD (tests/test_dirty_input.py), and
pandas' Arrow strings could not hold one anyway; U+FFFD is among the inputs."""

from __future__ import annotations

import html
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from negopt.compare.report import image_grid, render_report, write_report

HOSTILE = {  # name -> text, used as a prompt and as a negative
    "script": "<script>document.title='pwned'</script>",
    "img onerror": "<img src=x onerror=alert(1)>",
    "closing tags": "</td></tr></table><h1>injected</h1>",
    "attribute breakout": "' onmouseover='alert(1)' x='",
    "double-quote breakout": '" autofocus onfocus="alert(1)',
    "entity": "&lt;script&gt; &amp; &#60;b&#62;",
    "comment": "<!-- open comment",
    "style": "<style>body{display:none}</style>",
    "10k chars": "a" * 10_000 + "<b>",
    "emoji": "a cat 🐈‍⬛ with 👩🏽‍🚀 flags 🇫🇷",
    "RTL override": "a cat \u202eevil reversed",
    "RTL Arabic": "قطة على سطح المنزل",
    "zero-width": "a\u200bcat\u200c\u200d\ufeffhat",
    "full-width": "ａ ｃａｔ ＜ｂ＞",
    "lone surrogate, after clean": "lone \ufffd surrogate",
    "control chars": "tab\tnew\nline\x7f",
}
TEMPLATE_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "div", "table", "tr", "th",
                 "td", "img", "br", "small", "i", "bdi", "b", "code"}  # b, code: the profile line and the interval marks


class Tags(HTMLParser):
    """Every start tag with its attributes, and the page's text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture
def manifest(tmp_path):
    (tmp_path / "sft").mkdir()
    rows = []
    for i, text in enumerate(HOSTILE.values()):
        Image.fromarray(np.full((8, 8, 3), i, dtype=np.uint8)).save(tmp_path / f"sft/{i}_0.png")
        rows.append(dict(method="sft", prompt_idx=i, prompt=text, negative=text, seed=0, file=f"sft/{i}_0.png"))
    return pd.DataFrame(rows), tmp_path


def test_hostile_prompts_render_as_text_with_no_live_tag(manifest, tmp_path):
    frame, images = manifest
    metrics = {"sft": {"inception_score": 1.0, "inception_score_std": 0.1, "aesthetic": 4.0, "clip_score": 20.0,
                       "n_images": len(frame)}}
    page = render_report(metrics, {}, frame, images, {}, grid_prompts=len(frame))
    out = tmp_path / "report" / "index.html"
    write_report(out, page)
    written = out.read_bytes().decode("utf-8")  # strict: valid UTF-8

    parser = Tags()
    parser.feed(written)
    tags = [t for t, _ in parser.tags]
    assert set(tags) <= TEMPLATE_TAGS, set(tags) - TEMPLATE_TAGS
    assert tags.count("h1") == 1 and tags.count("style") == 1 and tags.count("img") == len(frame)
    attrs = {name for _, a in parser.tags for name, _ in a}
    assert attrs <= {"lang", "charset", "class", "src", "alt"}, attrs  # no onerror / onmouseover / autofocus
    text = "".join(parser.text)
    for name, hostile in HOSTILE.items():
        assert text.count(hostile) >= 2, name  # the prompt and the negative, each verbatim as text
        # direction controls cannot leak into the seed label or the next cell: each text sits in its own <bdi>
        assert written.count(f"<bdi>{html.escape(hostile)}</bdi>") >= 2, name


def test_grid_with_only_hostile_rows_and_no_images_does_not_crash(manifest):
    frame, images = manifest
    for png in (images / "sft").iterdir():
        png.unlink()
    grid = image_grid(frame, images, grid_prompts=len(frame))
    assert grid.count("<td>missing</td>") == len(frame) and "<script>" not in grid
